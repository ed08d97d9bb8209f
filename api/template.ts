/**
 * The saga template language: `{{ path }}` placeholders inside strings, nothing else.
 * A path starts at `input`, `execution` or `steps.<step>.response` and then walks object
 * keys (`.key`) and array indexes (`[0]`). There are no operators, calls or eval, so a
 * template can only read data the saga already has.
 *
 * Examples: `{{ input.userId }}`, `{{ steps.save_health_data.response.body.recordId }}`,
 * `/users/{{ input.user.id }}/records/{{ steps.save.response.body.items[0].id }}`.
 */

export type PathSegment = string | number;

export interface TemplateExpression {
  /** The path walked from the root object, e.g. ['steps', 'save', 'response', 'body', 'id']. */
  path: PathSegment[];
  /** The expression as written, for messages. */
  source: string;
}

export type TemplatePart = { literal: string } | { expression: TemplateExpression };

export class TemplateError extends Error {}

const OPEN = '{{';
const CLOSE = '}}';
const KEY = /^[A-Za-z_][A-Za-z0-9_-]*/;
const INDEX = /^\[([0-9]+)\]/;
const EXECUTION_FIELDS = ['id', 'saga', 'startedAt'];
const RESPONSE_FIELDS = ['body', 'status', 'headers'];

/** Splits a template string into literal text and placeholders; throws TemplateError. */
export function parseTemplate(template: string): TemplatePart[] {
  const parts: TemplatePart[] = [];
  let rest = template;
  while (rest.length > 0) {
    const open = rest.indexOf(OPEN);
    if (open === -1) {
      if (rest.includes(CLOSE)) throw new TemplateError(`"}}" without a matching "{{" in "${template}"`);
      parts.push({ literal: rest });
      break;
    }
    if (open > 0) parts.push({ literal: rest.slice(0, open) });
    const close = rest.indexOf(CLOSE, open + OPEN.length);
    if (close === -1) throw new TemplateError(`"{{" is never closed with "}}" in "${template}"`);
    parts.push({ expression: parseExpression(rest.slice(open + OPEN.length, close).trim()) });
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

/** What placeholders read: the execution's input, its identity, and earlier responses. */
export interface TemplateContext {
  input: unknown;
  execution: { id: string; saga: string; startedAt: string };
  steps: Record<string, { response: { status: number; headers: Record<string, string>; body: unknown } }>;
}

/**
 * Fills every placeholder in a JSON-like value. A string that is exactly one placeholder
 * becomes the value it reads (an object stays an object); placeholders inside longer
 * strings are written as text (JSON for non-strings). Reading a missing field throws
 * TemplateError naming the placeholder. Pure.
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

function lookup(expression: TemplateExpression, context: TemplateContext): unknown {
  let current: unknown = context;
  for (const segment of expression.path) {
    if (current === null || typeof current !== 'object' || !(String(segment) in (current as object))) {
      throw new TemplateError(
        `placeholder "{{ ${expression.source} }}" reads a field that is not there ("${segment}")`,
      );
    }
    current = (current as Record<string, unknown>)[String(segment)];
  }
  return current;
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

function checkRoot(source: string, path: PathSegment[]): void {
  const [root, second, third, fourth] = path;
  if (root === 'input') return;
  if (root === 'execution') {
    if (path.length === 2 && EXECUTION_FIELDS.includes(String(second))) return;
    throw invalid(source, `execution has only ${EXECUTION_FIELDS.join(', ')}`);
  }
  if (root === 'steps') {
    if (typeof second === 'string' && third === 'response' && RESPONSE_FIELDS.includes(String(fourth)))
      return;
    throw invalid(source, `a step is read as steps.<step>.response.${RESPONSE_FIELDS.join('|')}`);
  }
  throw invalid(source, 'a placeholder starts with input, execution or steps');
}

function invalid(source: string, why: string): TemplateError {
  return new TemplateError(`invalid placeholder "{{ ${source} }}": ${why}`);
}
