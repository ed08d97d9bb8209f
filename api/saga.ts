import { z } from 'zod';
import {
  GROUP_VERSION,
  celUniqueNames,
  condition,
  dnsLabel,
  duration,
  durationMs,
  firstDuplicateName,
  httpMethod,
  objectMeta,
  withRules,
} from './common.js';
import { TemplateError, referencedStep, templateExpressions } from './template.js';

/** Step names are snake_case or kebab-case, so templates can read them as `steps.<name>`. */
const STEP_NAME = /^[a-z][a-z0-9_-]*$/;

export const STEP_RETRY_ON = /^(5xx|4xx|429|connect-failure|timeout|[1-5][0-9][0-9])$/;

const templated =
  'May contain {{ input.x }}, {{ execution.id }} or {{ steps.<earlier step>.response.body.x }}.';

const action = z
  .strictObject({
    service: dnsLabel('The service called: an AiService or Kubernetes Service in the same namespace.'),
    method: httpMethod.default('POST').describe('HTTP method.'),
    path: z
      .string()
      .min(1)
      .max(2048)
      .regex(/^\//, { error: 'must start with "/"' })
      .describe(`Request path. ${templated}`),
    headers: z
      .record(z.string().max(256), z.string().max(4096))
      .default({})
      .describe(`Request headers. ${templated}`),
    body: z
      .json()
      .optional()
      .meta({ 'x-kubernetes-preserve-unknown-fields': true })
      .describe(`JSON request body; strings in it are templates. ${templated}`),
    timeout: duration('Timeout of one try of this call.').default('30s'),
  })
  .describe('An HTTP call to a step service. Every call carries an Idempotency-Key header.');

const retry = withRules(
  z
    .strictObject({
      maxAttempts: z
        .int()
        .min(1)
        .max(100)
        .default(3)
        .describe('Tries in all, the first included (1 means no retry).'),
      backoff: z
        .strictObject({
          initial: duration('Wait before the second try.').default('1s'),
          multiplier: z
            .number()
            .min(1)
            .max(10)
            .default(2)
            .describe('Each wait is the previous one times this.'),
          max: duration('Longest wait between tries.').default('60s'),
        })
        .prefault({})
        .describe('Exponential backoff with jitter.'),
      retryOn: z
        .array(
          z.string().regex(STEP_RETRY_ON, {
            error: 'must be 5xx, 4xx, 429, connect-failure, timeout or a status code such as 503',
          }),
        )
        .max(32)
        .default(['5xx', '429', 'connect-failure', 'timeout'])
        .describe('Failures that are retried: 5xx, 4xx, 429, connect-failure, timeout or a status code.'),
    })
    .describe('Retry policy of a step (Temporal-style).'),
  [
    {
      cel: 'duration(self.backoff.initial) <= duration(self.backoff.max)',
      message: 'retry.backoff.initial must not exceed retry.backoff.max',
      fieldPath: '.backoff.initial',
      check: (r) => durationMs(r.backoff.initial) <= durationMs(r.backoff.max) || ['backoff', 'initial'],
    },
  ],
);

const step = z
  .strictObject({
    name: z
      .string()
      .min(1)
      .max(63)
      .regex(STEP_NAME, { error: 'must start with a lowercase letter and hold only a-z, 0-9, "_" and "-"' })
      .describe('Step name, unique in the saga.'),
    action: action.describe('The forward call.'),
    compensation: action
      .optional()
      .describe('The call that undoes the action; run in reverse order when a later step fails.'),
    retry: retry.prefault({}),
    pivot: z
      .boolean()
      .default(false)
      .describe(
        'The point of no return: once it succeeds, later failures are retried forward, never compensated.',
      ),
  })
  .describe('One step of a saga.');

type Step = z.output<typeof step>;

export const sagaSpec = withRules(
  z
    .strictObject({
      orchestrator: dnsLabel('The AiService whose sidecars run this saga.'),
      timeout: duration('Longest time an execution may take; past it, the execution compensates.').default(
        '5m',
      ),
      concurrencyLimit: z
        .int()
        .min(1)
        .max(100000)
        .default(100)
        .describe('Most executions of this saga running at once; more wait in order.'),
      steps: z.array(step).min(1).max(50).describe('The steps, run in order.'),
      retention: z
        .strictObject({
          finished: duration(
            'How long a finished execution (completed, compensated or compensation-failed) is kept, from its last change.',
          ).default('24h'),
          maxFinished: z
            .int()
            .min(0)
            .max(1000000)
            .default(10000)
            .describe('Most finished executions kept; past it, the oldest finished are removed first.'),
        })
        .prefault({})
        .describe(
          'When finished executions are removed from the saga store, so it does not grow without bound. Unfinished executions are never removed.',
        ),
    })
    .describe('Desired state of a Saga.'),
  [
    {
      cel: celUniqueNames('self.steps'),
      message: 'steps must have unique names',
      fieldPath: '.steps',
      check: (s) => {
        const duplicate = firstDuplicateName(s.steps);
        return duplicate === -1 || ['steps', duplicate, 'name'];
      },
    },
    {
      cel: 'self.steps.filter(s, s.pivot).size() <= 1',
      message: 'steps may have at most one pivot',
      fieldPath: '.steps',
      check: (s) => s.steps.filter((x) => x.pivot).length <= 1 || ['steps'],
    },
    {
      // Linear, to stay within the API server's CEL cost budget: no pivot has a compensation,
      // and among steps that are a pivot or have a compensation, the pivot comes last.
      cel: '!self.steps.exists(x, x.pivot && has(x.compensation)) && self.steps.filter(x, x.pivot || has(x.compensation)).map(x, x.pivot ? 1 : 0).isSorted()',
      message:
        'a compensation on the pivot step or a step after it can never run (those steps are retried forward); remove it or move the pivot',
      fieldPath: '.steps',
      check: (s) => {
        const pivot = s.steps.findIndex((x) => x.pivot);
        const index = s.steps.findIndex((x, i) => pivot !== -1 && i >= pivot && x.compensation);
        return index === -1 || ['steps', index, 'compensation'];
      },
    },
  ],
).superRefine((spec, ctx) => {
  spec.steps.forEach((current, index) => {
    for (const [phase, call] of [
      ['action', current.action],
      ['compensation', current.compensation],
    ] as const) {
      if (!call) continue;
      for (const [field, value] of Object.entries({
        path: call.path,
        headers: call.headers,
        body: call.body,
      })) {
        const problem = templateProblem(value, spec.steps, index, phase);
        if (problem) ctx.addIssue({ code: 'custom', message: problem, path: ['steps', index, phase, field] });
      }
    }
  });
});

/**
 * Why a templated value cannot work in step `index`, or undefined when it can. An action
 * reads earlier steps only; a compensation runs after its own action, so it may read that too.
 */
function templateProblem(
  value: unknown,
  steps: Step[],
  index: number,
  phase: 'action' | 'compensation',
): string | undefined {
  const lastReadable = phase === 'action' ? index - 1 : index;
  try {
    for (const expression of templateExpressions(value)) {
      const name = referencedStep(expression);
      if (name === undefined) continue;
      const at = steps.findIndex((s) => s.name === name);
      if (at === -1)
        return `placeholder "{{ ${expression.source} }}" reads step "${name}", which this saga does not have`;
      if (at > lastReadable)
        return `placeholder "{{ ${expression.source} }}" reads step "${name}", which has not run yet at step "${steps[index]?.name}"`;
    }
  } catch (error) {
    if (error instanceof TemplateError) return error.message;
    throw error;
  }
  return undefined;
}

export const sagaStatus = z
  .strictObject({
    observedGeneration: z.int().min(0).optional().describe('The spec generation the status describes.'),
    conditions: z.array(condition).max(16).optional().describe('Ready, Progressing and Degraded.'),
  })
  .describe('Observed state of a Saga, written by the operator.');

export const saga = z
  .strictObject({
    apiVersion: z.literal(GROUP_VERSION),
    kind: z.literal('Saga'),
    metadata: objectMeta,
    spec: sagaSpec,
    status: sagaStatus.optional(),
  })
  .describe(
    'A distributed transaction: steps run in order by the orchestrator’s sidecar with a durable log; on failure, completed steps are compensated in reverse.',
  );

export type Saga = z.output<typeof saga>;
export type SagaInput = z.input<typeof saga>;
export type SagaSpec = z.output<typeof sagaSpec>;
export type SagaStep = Step;
export type SagaAction = z.output<typeof action>;
