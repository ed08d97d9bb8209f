/**
 * Hostile input against the step request renderer: values from an execution's input or
 * an earlier response must never change which path or service a step calls, add a header,
 * or read anything but the data itself.
 */
import { describe, expect, it } from '@jest/globals';
import {
  renderStepRequest,
  TemplateError,
  validateResource,
  type TemplateContext,
} from '../../../api/index.js';

function context(input: unknown, body: unknown = {}): TemplateContext {
  return {
    input,
    execution: { id: 'e1', saga: 'orders', startedAt: '2026-11-25T00:00:00.000Z' },
    steps: { save: { response: { status: 201, headers: { etag: 'v1' }, body } } },
  };
}

const render = (path: string, input: unknown, headers: Record<string, string> = {}) =>
  renderStepRequest({ path, headers }, context(input), 'step "save" action');

describe('a step path', () => {
  it.each([
    ['a/b', '/users/a%2Fb/orders'],
    ['x?admin=true', '/users/x%3Fadmin%3Dtrue/orders'],
    ['x#frag', '/users/x%23frag/orders'],
    ['%2e%2e', '/users/%252e%252e/orders'],
    ['..%2f..%2fadmin', '/users/..%252f..%252fadmin/orders'],
    ['a\\..\\b', '/users/a%5C..%5Cb/orders'],
    ['http://evil.example/', '/users/http%3A%2F%2Fevil.example%2F/orders'],
    ['ünï cödé', '/users/%C3%BCn%C3%AF%20c%C3%B6d%C3%A9/orders'],
    [42, '/users/42/orders'],
    [true, '/users/true/orders'],
  ])('encodes %j as one segment', (id, path) => {
    expect(render('/users/{{ input.id }}/orders', { id }).path).toBe(path);
  });

  it.each([['..'], ['.'], ['']])('refuses %j as a whole segment, naming the step and placeholder', (id) => {
    expect(() => render('/users/{{ input.id }}/orders', { id })).toThrow(TemplateError);
    expect(() => render('/users/{{ input.id }}/orders', { id })).toThrow(
      /^step "save" action: path placeholder "\{\{ input\.id \}\}" reads .* cannot be a URL path segment$/,
    );
  });

  it('refuses a value that completes a dot segment with the literal text around it', () => {
    expect(() => render('/files/.{{ input.ext }}', { ext: '.' })).toThrow('cannot be a URL path segment');
    expect(() => render('/files/.{{ input.ext }}/x', { ext: '%2e' })).not.toThrow();
    expect(() => render('/files/.{{ input.n }}', { n: 1 })).not.toThrow();
  });

  it('checks the rendered path as a whole: one leading "/", no dot segments', () => {
    // Literal text the schema would refuse: the renderer refuses it too, on its own.
    expect(() => render('//evil.example/x', {})).toThrow('must start with one "/"');
    expect(() => render('/a/../b', {})).toThrow('must not hold a "." or ".." segment');
    expect(() => render('/a/%2E%2e/b', {})).toThrow('must not hold a "." or ".." segment');
    expect(() => render('x/{{ input.id }}', { id: 'y' })).toThrow('must start with one "/"');
  });

  it('encodes values after "?" as query values and keeps the literal query text', () => {
    expect(render('/search?q={{ input.q }}&limit=10', { q: 'a&b=c#d e' }).path).toBe(
      '/search?q=a%26b%3Dc%23d%20e&limit=10',
    );
  });

  it('refuses values that are not scalars', () => {
    expect(() => render('/users/{{ input.user }}', { user: { id: 1 } })).toThrow(
      'placeholder "{{ input.user }}" in the path reads an object; it must read a string, number or boolean',
    );
    expect(() => render('/users/{{ input.ids }}', { ids: [1] })).toThrow('reads a list');
    expect(() => render('/users/{{ input.id }}', { id: null })).toThrow('reads null');
  });

  it('refuses a path that renders longer than 8192 characters', () => {
    expect(() => render('/x/{{ input.id }}', { id: 'a'.repeat(9000) })).toThrow('longer than 8192');
  });
});

describe('step headers', () => {
  it('keeps values as text and renders literal text around them', () => {
    expect(
      render(
        '/x',
        { token: 'abc', n: 3 },
        { authorization: 'Bearer {{ input.token }}', 'x-n': '{{ input.n }}' },
      ).headers,
    ).toEqual({ authorization: 'Bearer abc', 'x-n': '3' });
  });

  it.each([['a\r\nx-admin: true'], ['a\nb'], ['a\0b']])('refuses %j, naming the header', (value) => {
    expect(() => render('/x', { v: value }, { 'x-user': '{{ input.v }}' })).toThrow(
      'step "save" action: header "x-user" contains a line break or NUL, which a header cannot carry',
    );
  });
});

describe('a step body', () => {
  it('stays JSON: a lone placeholder keeps its type, strings around placeholders stay text', () => {
    const rendered = renderStepRequest(
      { path: '/x', headers: {}, body: { user: '{{ input.user }}', note: 'id {{ input.user.id }}', n: 1 } },
      context({ user: { id: '../a' } }),
    );
    expect(rendered.body).toEqual({ user: { id: '../a' }, note: 'id ../a', n: 1 });
  });
});

describe('templates read own data only', () => {
  it.each([
    ['input.constructor', {}],
    ['input.__proto__', {}],
    ['input.toString', {}],
    ['input.hasOwnProperty', {}],
    ['input.name.length', { name: 'abc' }],
    ['input.items.length', { items: [1, 2] }],
    ['input.items.map', { items: [1, 2] }],
    ['input.items[5]', { items: [1, 2] }],
    ['input.byIndex[0]', { byIndex: { 0: 'x' } }],
    ['steps.save.response.body.constructor', {}],
    ['steps.save.response.headers.constructor', {}],
  ])('{{ %s }} is an error naming the placeholder', (expression, input) => {
    const template = `/x/{{ ${expression} }}`;
    expect(() => render(template, input)).toThrow(TemplateError);
    expect(() => render(template, input)).toThrow(
      `placeholder "{{ ${expression} }}" reads a field that is not there`,
    );
  });

  it('reads an own "__proto__" key that JSON.parse made, as data', () => {
    const input = JSON.parse('{"__proto__": "p", "constructor": "c"}') as unknown;
    expect(render('/x/{{ input.__proto__ }}/{{ input.constructor }}', input).path).toBe('/x/p/c');
  });

  it('does not read objects that are not plain data', () => {
    expect(() => render('/x/{{ input.when.getTime }}', { when: new Date(0) })).toThrow(
      'reads a field that is not there',
    );
    class Secret {
      token = 's3cret';
    }
    expect(() => render('/x/{{ input.secret.token }}', { secret: new Secret() })).toThrow(
      'reads a field that is not there',
    );
  });

  it('reads objects without a prototype', () => {
    const input = Object.assign(Object.create(null) as object, { id: 'a' });
    expect(render('/x/{{ input.id }}', input).path).toBe('/x/a');
  });
});

describe('validateResource reads own kinds only', () => {
  it.each(['constructor', 'toString', '__proto__', 'hasOwnProperty'])(
    'refuses kind %j with a message',
    (kind) => {
      expect(
        validateResource({ apiVersion: 'aimesh.io/v1alpha1', kind, metadata: { name: 'x' }, spec: {} }),
      ).toEqual({
        ok: false,
        errors: [{ field: 'kind', message: `must be one of AiService, Saga (got "${kind}")` }],
      });
    },
  );
});
