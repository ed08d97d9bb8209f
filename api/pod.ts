/**
 * The pod escape hatch of an AiService: what real workloads need that aimesh does not
 * model itself (security contexts, command and args, volumes, scheduling, pull secrets,
 * labels and annotations), as Dapr and cdk8s-plus offer. Kubernetes' own types are kept
 * as they are (the API server checks them when the Deployment is applied); aimesh only
 * says where each goes and merges them over its safe defaults.
 */
import { z } from 'zod';

/** A Kubernetes object type aimesh passes through unchanged (checked by the API server). */
function kubernetesType(type: string, description: string) {
  return z
    .record(z.string(), z.unknown())
    .meta({ 'x-kubernetes-preserve-unknown-fields': true })
    .describe(`${description} A Kubernetes ${type}, passed through as is.`);
}

const labelMap = (what: string) =>
  z
    .record(z.string().min(1).max(317), z.string().max(4096))
    .refine((m) => Object.keys(m).length <= 64, { error: `at most 64 ${what}` })
    .optional();

const volumeMount = z
  .strictObject({
    name: z.string().min(1).max(63).describe('Name of a volume in spec.pod.volumes.'),
    mountPath: z.string().min(1).max(4096).regex(/^\//, { error: 'must be an absolute path' }),
    subPath: z.string().max(4096).optional(),
    readOnly: z.boolean().optional(),
  })
  .describe('Where a volume is mounted in the app container.');

export const appContainerOverrides = z
  .strictObject({
    command: z.array(z.string().max(4096)).max(64).optional().describe("Replaces the image's ENTRYPOINT."),
    args: z.array(z.string().max(4096)).max(256).optional().describe("Replaces the image's CMD."),
    workingDir: z.string().max(4096).optional(),
    securityContext: kubernetesType(
      'SecurityContext',
      "Merged over aimesh's defaults for the app container (allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities drop ALL); a field set here wins, e.g. readOnlyRootFilesystem: false for an image that writes to its root filesystem.",
    ).optional(),
    volumeMounts: z
      .array(volumeMount)
      .max(64)
      .optional()
      .describe('Mounts added to the app container (aimesh always mounts an emptyDir at /tmp).'),
  })
  .describe('Overrides for the app container.');

export const podOverrides = z
  .strictObject({
    labels: labelMap('labels').describe(
      "Labels added to the pod template (aimesh's own selector labels always win).",
    ),
    annotations: labelMap('annotations').describe('Annotations added to the pod template.'),
    securityContext: kubernetesType(
      'PodSecurityContext',
      "Merged over aimesh's pod defaults (runAsNonRoot: true, seccompProfile RuntimeDefault).",
    ).optional(),
    nodeSelector: z
      .record(z.string().max(317), z.string().max(63))
      .optional()
      .describe('Node labels the pod needs.'),
    tolerations: z.array(kubernetesType('Toleration', 'A taint the pod tolerates.')).max(32).optional(),
    affinity: kubernetesType('Affinity', 'Node and pod (anti-)affinity.').optional(),
    topologySpreadConstraints: z
      .array(kubernetesType('TopologySpreadConstraint', 'How replicas spread.'))
      .max(8)
      .optional(),
    priorityClassName: z.string().max(253).optional(),
    imagePullSecrets: z
      .array(z.strictObject({ name: z.string().min(1).max(253) }))
      .max(16)
      .optional()
      .describe('Secrets to pull the app image (and the sidecar image) with.'),
    volumes: z
      .array(kubernetesType('Volume', 'A volume the app container can mount (by its name).'))
      .max(64)
      .optional(),
    app: appContainerOverrides.optional(),
  })
  .describe(
    'Pod settings aimesh does not model itself, merged over its safe defaults: security contexts, command and args, volumes, scheduling, pull secrets, labels and annotations.',
  );

export type PodOverrides = z.output<typeof podOverrides>;
