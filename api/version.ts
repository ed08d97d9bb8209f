/**
 * aimesh's version and the image that carries it (operator, sidecar and CLI are one image).
 * A unit test holds this equal to package.json's version and the chart's appVersion.
 */
export const AIMESH_VERSION = '0.1.0';
export const AIMESH_IMAGE_REPOSITORY = 'ghcr.io/aimesh/aimesh';
export const AIMESH_IMAGE = `${AIMESH_IMAGE_REPOSITORY}:${AIMESH_VERSION}`;
