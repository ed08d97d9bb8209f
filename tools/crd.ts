import { z } from 'zod';
import { aiServiceSpec, aiServiceStatus } from '../api/aiservice.js';
import { API_GROUP, API_VERSION, INT_OR_STRING, SERVICE_NAME_MESSAGE } from '../api/common.js';
import { sagaSpec, sagaStatus } from '../api/saga.js';

type JsonSchema = { [key: string]: unknown };

interface CrdDefinition {
  kind: string;
  plural: string;
  shortNames: string[];
  description: string;
  spec: z.ZodType;
  status: z.ZodType;
  printerColumns: { name: string; type: string; jsonPath: string; description: string; priority?: number }[];
  rootRules: { rule: string; message: string; fieldPath?: string }[];
}

const READY_COLUMN = {
  name: 'Ready',
  type: 'string',
  jsonPath: '.status.conditions[?(@.type=="Ready")].status',
  description: 'Whether the resource is ready.',
};
const AGE_COLUMN = {
  name: 'Age',
  type: 'date',
  jsonPath: '.metadata.creationTimestamp',
  description: 'Age.',
};

const NAME_IS_DNS_LABEL = {
  rule: "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && self.metadata.name.size() <= 63",
  // The same words as the zod rule, so kubectl apply and aimesh validate say the same thing.
  message: `metadata.name ${SERVICE_NAME_MESSAGE}`,
};

const definitions: CrdDefinition[] = [
  {
    kind: 'AiService',
    plural: 'aiservices',
    shortNames: ['ais', 'aisvc'],
    description:
      'An AI-backed microservice: its workload, how it is discovered, the upstreams and AI providers it calls, and who may call it. The aimesh operator turns it into a Deployment with the aimesh sidecar, a Service, sidecar config and Istio policies.',
    spec: aiServiceSpec,
    status: aiServiceStatus,
    printerColumns: [
      READY_COLUMN,
      {
        name: 'Replicas',
        type: 'integer',
        jsonPath: '.status.replicas',
        description: 'Replicas of the Deployment.',
      },
      {
        name: 'Available',
        type: 'integer',
        jsonPath: '.status.readyReplicas',
        description: 'Ready replicas.',
      },
      AGE_COLUMN,
    ],
    rootRules: [NAME_IS_DNS_LABEL],
  },
  {
    kind: 'Saga',
    plural: 'sagas',
    shortNames: ['sg'],
    description:
      'A distributed transaction run by the sidecars of its orchestrator AiService: steps run in order with a durable log; on failure, completed steps are compensated in reverse order.',
    spec: sagaSpec,
    status: sagaStatus,
    printerColumns: [
      {
        name: 'Orchestrator',
        type: 'string',
        jsonPath: '.spec.orchestrator',
        description: 'AiService running it.',
      },
      { name: 'Steps', type: 'integer', jsonPath: '.status.steps', description: 'How many steps it has.' },
      READY_COLUMN,
      AGE_COLUMN,
    ],
    rootRules: [],
  },
];

/** The CRDs of every aimesh kind, as plain objects ready to serialize. Pure. */
export function customResourceDefinitions(): Record<string, unknown>[] {
  return definitions.map(customResourceDefinition);
}

function customResourceDefinition(definition: CrdDefinition): Record<string, unknown> {
  const singular = definition.kind.toLowerCase();
  const openAPIV3Schema: JsonSchema = {
    description: definition.description,
    type: 'object',
    required: ['spec'],
    properties: {
      apiVersion: { type: 'string', description: `${API_GROUP}/${API_VERSION}` },
      kind: { type: 'string', description: definition.kind },
      metadata: { type: 'object' },
      spec: toStructural(definition.spec),
      status: toStructural(definition.status),
    },
  };
  if (definition.rootRules.length > 0) openAPIV3Schema['x-kubernetes-validations'] = definition.rootRules;
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: {
      name: `${definition.plural}.${API_GROUP}`,
      labels: { 'app.kubernetes.io/part-of': 'aimesh' },
    },
    spec: {
      group: API_GROUP,
      names: {
        kind: definition.kind,
        listKind: `${definition.kind}List`,
        plural: definition.plural,
        singular,
        shortNames: definition.shortNames,
        categories: ['aimesh'],
      },
      scope: 'Namespaced',
      versions: [
        {
          name: API_VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: definition.printerColumns,
          schema: { openAPIV3Schema },
        },
      ],
    },
  };
}

/** A zod schema as a Kubernetes structural schema (every node typed, no stray keywords). */
function toStructural(schema: z.ZodType): JsonSchema {
  const json = z.toJSONSchema(schema, { target: 'openapi-3.0', io: 'input', unrepresentable: 'throw' });
  return structural(json as JsonSchema);
}

const DROPPED_KEYWORDS = ['$schema', 'id', '$id', 'examples', 'definitions', '$defs'];

function structural(node: JsonSchema): JsonSchema {
  const out: JsonSchema = {};
  for (const [key, value] of Object.entries(node)) {
    if (DROPPED_KEYWORDS.includes(key)) continue;
    out[key] = value;
  }
  if (out[INT_OR_STRING]) {
    delete out[INT_OR_STRING];
    delete out.anyOf;
    out['x-kubernetes-int-or-string'] = true;
  }
  if (out['x-kubernetes-preserve-unknown-fields']) {
    // Any JSON value: the API server needs no type and no nested schema here.
    for (const key of ['allOf', 'anyOf', 'oneOf', 'type', 'additionalProperties', 'items', 'nullable'])
      delete out[key];
  }
  if (out.properties) {
    if (out.additionalProperties === false) delete out.additionalProperties;
    const properties = out.properties as Record<string, JsonSchema>;
    out.properties = Object.fromEntries(Object.entries(properties).map(([k, v]) => [k, structural(v)]));
  }
  if (out.additionalProperties && typeof out.additionalProperties === 'object') {
    out.additionalProperties = structural(out.additionalProperties as JsonSchema);
  }
  if (out.items) out.items = structural(out.items as JsonSchema);
  dropSafeIntegerBounds(out);
  completeDefault(out);
  return out;
}

/**
 * Writes an object default out in full (`{}` becomes `{strategy: round-robin}`): the API
 * server checks a default against the CEL rules without defaulting inside it first, and
 * the full value also tells `kubectl explain` readers what they get.
 */
function completeDefault(node: JsonSchema): void {
  const value = node.default;
  if (!node.properties || value === null || typeof value !== 'object' || Array.isArray(value)) return;
  const filled: Record<string, unknown> = { ...(value as Record<string, unknown>) };
  for (const [key, child] of Object.entries(node.properties as Record<string, JsonSchema>)) {
    if (!(key in filled) && child.default !== undefined) filled[key] = child.default;
  }
  node.default = filled;
}

/** zod's int() without bounds emits ±2^53-1; Kubernetes needs no such noise. */
function dropSafeIntegerBounds(node: JsonSchema): void {
  if (node.maximum === Number.MAX_SAFE_INTEGER) delete node.maximum;
  if (node.minimum === Number.MIN_SAFE_INTEGER) delete node.minimum;
}
