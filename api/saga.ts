import { z } from 'zod';
import {
  GROUP_VERSION,
  celString,
  celUniqueNames,
  condition,
  dnsLabel,
  duration,
  durationMs,
  firstDuplicateName,
  headerMap,
  httpMethod,
  objectMeta,
  subdomainName,
  withRules,
} from './common.js';
import {
  DOT_SEGMENT_PATTERN,
  PATH_TEMPLATE_PATTERN,
  HEADER_TEMPLATE_PATTERN,
  TemplateError,
  headerTemplateProblem,
  parseTemplate,
  pathTemplateProblem,
  referencedStep,
  templateExpressions,
} from './template.js';

/** Step names are snake_case or kebab-case, so templates can read them as `steps.<name>`. */
const STEP_NAME = /^[a-z][a-z0-9_-]*$/;

export const STEP_RETRY_ON = /^(5xx|4xx|429|connect-failure|timeout|[1-5][0-9][0-9])$/;

const templated =
  'May contain {{ input.x }}, {{ execution.id }} or {{ steps.<earlier step>.response.body.x }}.';

/**
 * Headers a step may not set: the sidecar sets Idempotency-Key and the framing headers
 * itself, and Host or a hop-by-hop header would change where or how the call goes.
 */
export const RESERVED_STEP_HEADERS = [
  'host',
  'connection',
  'content-length',
  'transfer-encoding',
  'te',
  'upgrade',
  'keep-alive',
  'proxy-connection',
  'idempotency-key',
] as const;

/** Most headers a step call sets: the API server's CEL cost budget covers this many. */
const MAX_STEP_HEADERS = 16;

/** Largest JSON body template, as JSON text. Requests are rendered from it on every try. */
export const MAX_BODY_TEMPLATE = 65536;

/** A template's own syntax problem, or true: what the CEL pattern also checks. */
function syntax(template: string, extra?: (t: string) => string | undefined) {
  try {
    parseTemplate(template);
  } catch (error) {
    if (error instanceof TemplateError) return { path: [], message: error.message };
    throw error;
  }
  const problem = extra?.(template);
  return problem === undefined || { path: [], message: problem };
}

const stepPath = withRules(
  z.string().min(1).max(2048).describe(`Request path, with an optional query. ${templated}`),
  [
    {
      cel: `self.matches(${celString(PATH_TEMPLATE_PATTERN)}) && !self.startsWith('//') && !self.matches(${celString(DOT_SEGMENT_PATTERN)})`,
      message:
        'path must start with one "/", hold only URL path and query characters (percent-encode others) and well-formed {{ placeholders }}, and no "." or ".." segment',
      check: (path) => syntax(path, pathTemplateProblem),
    },
  ],
);

const stepHeaderValue = withRules(z.string().max(256).describe('Header value; a template.'), [
  {
    cel: `self.matches(${celString(HEADER_TEMPLATE_PATTERN)})`,
    message: 'header value must hold well-formed {{ placeholders }} and no braces, line break or NUL besides',
    check: (value) => syntax(value, headerTemplateProblem),
  },
]);

const action = z
  .strictObject({
    service: dnsLabel('The service called: an AiService or Kubernetes Service in the same namespace.'),
    method: httpMethod.default('POST').describe('HTTP method.'),
    path: stepPath,
    headers: headerMap(
      `Request headers. ${templated} Values read into a header must not hold a line break.`,
      stepHeaderValue,
      RESERVED_STEP_HEADERS,
      MAX_STEP_HEADERS,
    ).default({}),
    body: z
      .json()
      .optional()
      .refine((body) => body === undefined || JSON.stringify(body).length <= MAX_BODY_TEMPLATE, {
        error: `body must be at most ${MAX_BODY_TEMPLATE} characters as JSON`,
      })
      .superRefine((body, ctx) => {
        try {
          templateExpressions(body);
        } catch (error) {
          if (!(error instanceof TemplateError)) throw error;
          ctx.addIssue({ code: 'custom', message: error.message });
        }
      })
      .meta({ 'x-kubernetes-preserve-unknown-fields': true })
      .describe(
        `JSON request body; strings in it are templates. ${templated} At most ${MAX_BODY_TEMPLATE} characters as JSON.`,
      ),
    timeout: duration('Timeout of one try of this call.', { max: '1h' }).default('30s'),
  })
  .describe(
    'An HTTP call to a step service. Every call carries an Idempotency-Key header. Values read into the path are encoded as one path segment (or one query value after "?"), so input cannot change which path or service is called.',
  );

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
          initial: duration('Wait before the second try.', {
            max: '1h',
            zero: 'retries at once, every time',
          }).default('1s'),
          multiplier: z
            .number()
            .min(1)
            .max(10)
            .default(2)
            .describe('Each wait is the previous one times this.'),
          max: duration('Longest wait between tries.', { max: '1h' }).default('60s'),
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

/** Where a placeholder names a step, up to the end of the name. */
const STEP_REFERENCE = '\\{\\{[ \\t]*steps\\.[A-Za-z_][A-Za-z0-9_-]*';

/**
 * CEL for "the first placeholder in the path of `call` (of step `s`) that reads a step
 * reads one that exists and comes before `s` (or is `s`, when `orSame`)". Only the first:
 * checking every placeholder (findAll, or every pair of steps) exceeds the API server's CEL
 * cost budget. zod, and so `aimesh validate` and the webhook, check all of them.
 * `[x].all(v, ...)` binds v to x once (cel.bind is not offered to CRD rules).
 */
function celFirstPathReference(call: string, orSame: boolean): string {
  return (
    `[self.steps.map(y, y.name)].all(names, self.steps.all(s, ${orSame ? `!has(${call}) || ` : ''}` +
    `[${call}.path.find(${celString(STEP_REFERENCE)})].all(r, r == '' || self.steps.exists(x, ` +
    `r.endsWith('.' + x.name) && names.indexOf(x.name) ${orSame ? '<=' : '<'} names.indexOf(s.name)))))`
  );
}

export const sagaSpec = withRules(
  z
    .strictObject({
      orchestrator: dnsLabel('The AiService whose sidecars run this saga.'),
      timeout: duration('Longest time an execution may take; past it, the execution compensates.', {
        max: '24h',
      }).default('5m'),
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
            { max: '8760h' },
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
    {
      cel: celFirstPathReference('s.action', false),
      message:
        'a placeholder in a step action path reads a step this saga does not have or that has not run yet; an action reads only earlier steps',
      fieldPath: '.steps',
      check: (s) => firstReferenceProblem(s.steps, ['path'], ['action']),
    },
    {
      cel: celFirstPathReference('s.compensation', true),
      message:
        'a placeholder in a step compensation path reads a step this saga does not have or that has not run yet; a compensation reads only its own and earlier steps',
      fieldPath: '.steps',
      check: (s) => firstReferenceProblem(s.steps, ['path'], ['compensation']),
    },
  ],
).superRefine((spec, ctx) => {
  // Headers cost too much for the API server's CEL budget, and a body (any JSON) has no
  // schema it could walk: only zod, and so `aimesh validate` and the webhook, check them.
  const problem = firstReferenceProblem(spec.steps, ['headers', 'body'], ['action', 'compensation']);
  if (problem !== true) ctx.addIssue({ code: 'custom', ...problem });
});

type TemplatedField = 'path' | 'headers' | 'body';

/**
 * The first placeholder that reads a step it cannot: one the saga does not have, or one
 * that has not run yet. An action reads earlier steps only; a compensation runs after its
 * own action, so it may read that step too.
 */
function firstReferenceProblem(
  steps: Step[],
  fields: TemplatedField[],
  phases: ('action' | 'compensation')[],
): true | { path: (string | number)[]; message: string } {
  for (const [index, current] of steps.entries()) {
    for (const phase of phases) {
      const call = current[phase];
      if (!call) continue;
      const lastReadable = phase === 'action' ? index - 1 : index;
      for (const field of fields) {
        const path = ['steps', index, phase, field];
        let expressions;
        try {
          expressions = templateExpressions(call[field]);
        } catch (error) {
          // The field's own syntax check reports it.
          if (error instanceof TemplateError) continue;
          throw error;
        }
        for (const expression of expressions) {
          const name = referencedStep(expression);
          if (name === undefined) continue;
          const at = steps.findIndex((s) => s.name === name);
          if (at === -1)
            return {
              path,
              message: `placeholder "{{ ${expression.source} }}" reads step "${name}", which this saga does not have`,
            };
          if (at > lastReadable)
            return {
              path,
              message: `placeholder "{{ ${expression.source} }}" reads step "${name}", which has not run yet at step "${current.name}"`,
            };
        }
      }
    }
  }
  return true;
}

export const sagaStatus = z
  .strictObject({
    observedGeneration: z.int().min(0).optional().describe('The spec generation the status describes.'),
    conditions: z.array(condition).max(16).optional().describe('Ready, Progressing and Degraded.'),
    steps: z
      .int()
      .min(0)
      .optional()
      .describe('How many steps the observed spec has (for `kubectl get sagas`).'),
  })
  .describe('Observed state of a Saga, written by the operator.');

export const saga = z
  .strictObject({
    apiVersion: z.literal(GROUP_VERSION),
    kind: z.literal('Saga'),
    metadata: objectMeta(subdomainName),
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
