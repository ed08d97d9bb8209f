export * from './common.js';
export * from './aiservice.js';
export * from './saga.js';
export * from './template.js';
export * from './validate.js';
export * from './sidecar-config.js';
export * from './version.js';
export * from './pod.js';
