/**
 * The saga template language: `{{ path }}` placeholders inside strings, nothing else.
 * A path starts at `input`, `execution` or `steps.<step>.response` and then walks object
 * keys (`.key`) and array indexes (`[0]`). There are no operators, calls or eval, and a
 * path reads only the own fields of plain data (JSON objects and arrays), so a template
 * can only read data the saga already has.
 *
 * Examples: `{{ input.userId }}`, `{{ steps.save_health_data.response.body.recordId }}`,
 * `/users/{{ input.user.id }}/records/{{ steps.save.response.body.items[0].id }}`.
 *
 * For step paths and header values the syntax is also written as one regular expression
 * (PATH_TEMPLATE_PATTERN, HEADER_TEMPLATE_PATTERN) that means the same in JavaScript and in
 * RE2, so the API server's CEL rules accept exactly the templates the parser and checks accept.
 */
import { headerValue, pathSegment, queryValue } from '../lib/encode/index.js';
import { AimeshError } from '../lib/errors/index.js';

export type PathSegment = string | number;

export interface TemplateExpression {
  /** The path walked from the root object, e.g. ['steps', 'save', 'response', 'body', 'id']. */
  path: PathSegment[];
  /** The expression as written, for messages. */
  source: string;
}

export type TemplatePart = { literal: string } | { expression: TemplateExpression };

/** A template that cannot be parsed or rendered: bad input, never worth retrying. */
export class TemplateError extends AimeshError {
  constructor(message: string) {
    super('input.invalid', message);
    this.name = 'TemplateError';
  }
}

const OPEN = '{{';
const CLOSE = '}}';
const KEY = /^[A-Za-z_][A-Za-z0-9_-]*/;
const INDEX = /^\[([0-9]+)\]/;
/** Only spaces and tabs may pad a placeholder: RE2 and JavaScript agree on what they are. */
const PADDING = /^[ \t]*|[ \t]*$/g;
const EXECUTION_FIELDS = ['id', 'saga', 'startedAt'];
const RESPONSE_FIELDS = ['body', 'status', 'headers'];

const KEY_SOURCE = '[A-Za-z_][A-Za-z0-9_-]*';
const WALK_SOURCE = `(\\.${KEY_SOURCE}|\\[[0-9]+\\])*`;
const EXPRESSION_SOURCE =
  `(input${WALK_SOURCE}|execution\\.(id|saga|startedAt)` +
  `|steps\\.${KEY_SOURCE}\\.response\\.(status|headers(\\.${KEY_SOURCE})?|body${WALK_SOURCE}))`;
const PLACEHOLDER_SOURCE = `\\{\\{[ \\t]*${EXPRESSION_SOURCE}[ \\t]*\\}\\}`;
/**
 * Characters a step path may hold outside placeholders: those RFC 3986 allows in a path
 * and query, with "%" only as a percent-encoding. No "#" (a fragment is never sent), no
 * "\" (some URL parsers read it as "/"), no braces, spaces or controls.
 */
const PATH_LITERAL_SOURCE = "([A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})";

/** A templated step path: starts with one "/", then literal path text and placeholders. */
export const PATH_TEMPLATE_PATTERN = `^/(${PATH_LITERAL_SOURCE}|${PLACEHOLDER_SOURCE})*$`;

/**
 * A templated header value: placeholders and literal text without braces, CR, LF or NUL.
 * Literal braces are refused (unlike in a body) so the pattern stays small enough for the
 * API server's CEL cost budget on every header.
 */
export const HEADER_TEMPLATE_PATTERN = `^([^{}\\r\\n\\x00]|${PLACEHOLDER_SOURCE})*$`;

/** A `.` or `..` segment (plain or percent-encoded) before the query: it would re-target the call. */
export const DOT_SEGMENT_PATTERN = '^[^?]*/(\\.|%2[eE]){1,2}(/|\\?|$)';

/** Longest path and header value a rendered step request may have. */
export const MAX_RENDERED_PATH = 8192;
export const MAX_RENDERED_HEADER = 8192;

/** Splits a template string into literal text and placeholders; throws TemplateError. */
export function parseTemplate(template: string): TemplatePart[] {
  const parts: TemplatePart[] = [];
  let rest = template;
  while (rest.length > 0) {
    const open = rest.indexOf(OPEN);
    const literal = open === -1 ? rest : rest.slice(0, open);
    if (literal.includes(CLOSE)) throw new TemplateError(`"}}" without a matching "{{" in "${template}"`);
    if (literal) parts.push({ literal });
    if (open === -1) break;
    const close = rest.indexOf(CLOSE, open + OPEN.length);
    if (close === -1) throw new TemplateError(`"{{" is never closed with "}}" in "${template}"`);
    parts.push({ expression: parseExpression(rest.slice(open + OPEN.length, close).replace(PADDING, '')) });
    rest = rest.slice(close + CLOSE.length);
  }
  return parts;
}

/** Every placeholder in a JSON-like value (strings inside objects and arrays included). */
export function templateExpressions(value: unknown): TemplateExpression[] {
  if (typeof value === 'string') {
    return parseTemplate(value).flatMap((part) => ('expression' in part ? [part.expression] : []));
  }
  if (Array.isArray(value)) return value.flatMap(templateExpressions);
  if (value !== null && typeof value === 'object') return Object.values(value).flatMap(templateExpressions);
  return [];
}

/**
 * Why a step path template can never render to a safe request path, or undefined when
 * it can: the checks that need no input. Placeholder syntax is the parser's business.
 */
export function pathTemplateProblem(template: string): string | undefined {
  if (!template.startsWith('/') || template.startsWith('//'))
    return 'must start with one "/" (a path on the step service, never a URL or "//host")';
  if (new RegExp(DOT_SEGMENT_PATTERN).test(template))
    return 'must not hold a "." or ".." segment (it would reach another path or service)';
  const literal = template.replace(new RegExp(PLACEHOLDER_SOURCE, 'g'), '');
  const bad = literal.replace(new RegExp(PATH_LITERAL_SOURCE, 'g'), '')[0];
  if (bad !== undefined)
    return `must not hold ${JSON.stringify(bad)} outside a placeholder; percent-encode it (a path may not hold "#", "\\", braces or spaces)`;
  return undefined;
}

/** Why a header value template can never render to a safe header, or undefined when it can. */
export function headerTemplateProblem(template: string): string | undefined {
  const literal = template.replace(new RegExp(PLACEHOLDER_SOURCE, 'g'), '');
  if (/[\r\n\0]/.test(literal)) return 'must not hold a line break or NUL';
  if (/[{}]/.test(literal)) return 'must not hold "{" or "}" outside a placeholder';
  return undefined;
}

/** What placeholders read: the execution's input, its identity, and earlier responses. */
export interface TemplateContext {
  input: unknown;
  execution: { id: string; saga: string; startedAt: string };
  steps: Record<string, { response: { status: number; headers: Record<string, string>; body: unknown } }>;
}

/**
 * Fills every placeholder in a JSON-like value. A string that is exactly one placeholder
 * becomes the value it reads (an object stays an object); placeholders inside longer
 * strings are written as text (JSON for non-strings). Reading a field that is not an own
 * field of plain data throws TemplateError naming the placeholder. Pure.
 */
export function renderTemplate(value: unknown, context: TemplateContext): unknown {
  if (typeof value === 'string') {
    const parts = parseTemplate(value);
    const only = parts.length === 1 ? parts[0] : undefined;
    if (only && 'expression' in only) return lookup(only.expression, context);
    return parts
      .map((part) => {
        if ('literal' in part) return part.literal;
        const found = lookup(part.expression, context);
        return typeof found === 'string' ? found : JSON.stringify(found);
      })
      .join('');
  }
  if (Array.isArray(value)) return value.map((item) => renderTemplate(item, context));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, renderTemplate(v, context)]));
  }
  return value;
}

/** A step's call as written in the Saga: every string in it is a template. */
export interface StepRequestTemplate {
  path: string;
  headers: Record<string, string>;
  body?: unknown;
}

/** A step's call ready to send: path relative to the step service, headers, JSON body. */
export interface StepRequest {
  path: string;
  headers: Record<string, string>;
  body: unknown;
}

/**
 * Renders a step's call from its templates. Every value read into the path is encoded as
 * one path segment (before the "?") or one query value (after it), so no input can add a
 * level, climb with "..", start a query or a fragment; literal template text is kept as
 * written. Header values must not hold CR, LF or NUL. The body stays JSON. The result is
 * checked once more as a whole: a relative path starting with one "/", without "." or
 * ".." segments. Throws TemplateError naming `where`, the field and the placeholder. Pure.
 */
export function renderStepRequest(
  template: StepRequestTemplate,
  context: TemplateContext,
  where = 'step call',
): StepRequest {
  const at = (message: string) => new TemplateError(`${where}: ${message}`);
  try {
    const path = renderPath(template.path, context);
    checkRelativePath(path);
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(template.headers)) {
      const rendered = parseTemplate(value)
        .map((part) =>
          'literal' in part ? part.literal : scalar(part.expression, context, `header ${name}`),
        )
        .join('');
      if (rendered.length > MAX_RENDERED_HEADER)
        throw new TemplateError(`header "${name}" renders longer than ${MAX_RENDERED_HEADER} characters`);
      headers[name] = headerValue(rendered, `header "${name}"`);
    }
    const body = template.body === undefined ? undefined : renderTemplate(template.body, context);
    return { path, headers, body };
  } catch (error) {
    if (error instanceof AimeshError) throw at(error.message);
    throw error;
  }
}

function renderPath(template: string, context: TemplateContext): string {
  let inQuery = false;
  const rendered = parseTemplate(template)
    .map((part) => {
      if ('literal' in part) {
        inQuery ||= part.literal.includes('?');
        return part.literal;
      }
      const value = scalar(part.expression, context, inQuery ? 'query' : 'path');
      return inQuery
        ? queryValue(value)
        : pathSegment(value, `path placeholder "{{ ${part.expression.source} }}" reads`);
    })
    .join('');
  if (rendered.length > MAX_RENDERED_PATH)
    throw new TemplateError(`path renders longer than ${MAX_RENDERED_PATH} characters`);
  return rendered;
}

/**
 * The last word on a rendered path, whatever the template said: it must stay on the step
 * service, so no scheme or "//authority", no backslash or fragment, no dot segments.
 */
function checkRelativePath(path: string): void {
  const [pathPart = ''] = path.split('?', 1);
  const problem =
    !path.startsWith('/') || path.startsWith('//')
      ? 'must start with one "/"'
      : /[\\#\s]/.test(path)
        ? 'must not hold "\\", "#" or white space'
        : pathPart.split('/').some((s) => /^(\.|%2e){1,2}$/i.test(s))
          ? 'must not hold a "." or ".." segment'
          : undefined;
  if (problem) throw new TemplateError(`path ${JSON.stringify(path)} ${problem}`);
}

/** A placeholder that goes into a path, query or header: it must read a scalar. */
function scalar(
  expression: TemplateExpression,
  context: TemplateContext,
  place: string,
): string | number | boolean {
  const value = lookup(expression, context);
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') return value;
  throw new TemplateError(
    `placeholder "{{ ${expression.source} }}" in the ${place} reads ${value === null ? 'null' : Array.isArray(value) ? 'a list' : 'an object'}; it must read a string, number or boolean`,
  );
}

function lookup(expression: TemplateExpression, context: TemplateContext): unknown {
  let current: unknown = context;
  for (const segment of expression.path) {
    if (!hasOwnData(current, segment))
      throw new TemplateError(
        `placeholder "{{ ${expression.source} }}" reads a field that is not there ("${segment}"); templates read only the own fields of JSON objects and the items of lists`,
      );
    current = (current as Record<PathSegment, unknown>)[segment];
  }
  return current;
}

/**
 * Whether `segment` is an own field of plain data: an index within a list, or an own key
 * of a plain object. Inherited properties (`constructor`, `__proto__`, `toString`), a
 * string's `length` or a list's methods are not data and are never read.
 */
function hasOwnData(container: unknown, segment: PathSegment): boolean {
  if (Array.isArray(container))
    return typeof segment === 'number' && segment < container.length && Object.hasOwn(container, segment);
  if (container === null || typeof container !== 'object' || typeof segment !== 'string') return false;
  const prototype = Object.getPrototypeOf(container) as unknown;
  return (prototype === Object.prototype || prototype === null) && Object.hasOwn(container, segment);
}

/** The step a placeholder reads from, if it reads a step's response. */
export function referencedStep(expression: TemplateExpression): string | undefined {
  return expression.path[0] === 'steps' ? String(expression.path[1]) : undefined;
}

function parseExpression(source: string): TemplateExpression {
  if (source === '') throw new TemplateError('empty placeholder "{{ }}"');
  const path: PathSegment[] = [];
  let rest = source;
  while (rest.length > 0) {
    const index = INDEX.exec(rest);
    if (index && path.length > 0) {
      path.push(Number(index[1]));
      rest = rest.slice(index[0].length);
      continue;
    }
    if (path.length > 0) {
      if (!rest.startsWith('.')) throw invalid(source, `unexpected "${rest[0]}"`);
      rest = rest.slice(1);
    }
    const key = KEY.exec(rest);
    if (!key) throw invalid(source, 'expected a field name');
    path.push(key[0]);
    rest = rest.slice(key[0].length);
  }
  checkRoot(source, path);
  return { path, source };
}

/** Refuses paths that can never read anything: the shapes of execution and responses are known. */
function checkRoot(source: string, path: PathSegment[]): void {
  const [root, second, third, fourth, ...more] = path;
  if (root === 'input') return;
  if (root === 'execution') {
    if (path.length === 2 && EXECUTION_FIELDS.includes(String(second))) return;
    throw invalid(source, `execution has only ${EXECUTION_FIELDS.join(', ')}`);
  }
  if (root === 'steps') {
    if (typeof second !== 'string' || third !== 'response' || !RESPONSE_FIELDS.includes(String(fourth)))
      throw invalid(source, `a step is read as steps.<step>.response.${RESPONSE_FIELDS.join('|')}`);
    if (fourth === 'status' && more.length > 0) throw invalid(source, 'a response status is a number');
    if (fourth === 'headers' && (more.length > 1 || typeof more[0] === 'number'))
      throw invalid(source, 'response headers are read one by name: steps.<step>.response.headers.<name>');
    return;
  }
  throw invalid(source, 'a placeholder starts with input, execution or steps');
}

function invalid(source: string, why: string): TemplateError {
  return new TemplateError(`invalid placeholder "{{ ${source} }}": ${why}`);
}
