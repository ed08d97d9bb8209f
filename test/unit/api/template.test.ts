import { describe, expect, it } from '@jest/globals';
import {
  DOT_SEGMENT_PATTERN,
  HEADER_TEMPLATE_PATTERN,
  PATH_TEMPLATE_PATTERN,
  TemplateError,
  headerTemplateProblem,
  parseTemplate,
  pathTemplateProblem,
  referencedStep,
  templateExpressions,
} from '../../../api/index.js';

describe('saga template language', () => {
  it('splits literal text and placeholders', () => {
    expect(
      parseTemplate('/users/{{ input.user.id }}/records/{{steps.save.response.body.items[0].id}}'),
    ).toEqual([
      { literal: '/users/' },
      { expression: { path: ['input', 'user', 'id'], source: 'input.user.id' } },
      { literal: '/records/' },
      {
        expression: {
          path: ['steps', 'save', 'response', 'body', 'items', 0, 'id'],
          source: 'steps.save.response.body.items[0].id',
        },
      },
    ]);
  });

  it('reads plain strings as one literal', () => {
    expect(parseTemplate('no placeholders')).toEqual([{ literal: 'no placeholders' }]);
  });

  it('finds placeholders anywhere in a JSON body and names the steps they read', () => {
    const body = {
      user: '{{ input.userId }}',
      nested: [{ record: '{{ steps.save_health_data.response.body.id }}' }],
    };
    const expressions = templateExpressions(body);
    expect(expressions.map((e) => e.source)).toEqual([
      'input.userId',
      'steps.save_health_data.response.body.id',
    ]);
    expect(expressions.map(referencedStep)).toEqual([undefined, 'save_health_data']);
  });

  it.each([
    ['{{ input.x ', 'never closed'],
    ['input.x }}', 'without a matching'],
    ['{{ }}', 'empty placeholder'],
    ['{{ process.env.SECRET }}', 'starts with input, execution or steps'],
    ['{{ steps.save.body }}', 'steps.<step>.response'],
    ['{{ execution.secret }}', 'execution has only'],
    ['{{ input.x + 1 }}', 'unexpected'],
    ['{{ input..x }}', 'expected a field name'],
    ['{{ constructor.constructor("x")() }}', 'unexpected "("'],
    ['{{ constructor }}', 'starts with input, execution or steps'],
  ])('rejects %s', (template, message) => {
    expect(() => parseTemplate(template)).toThrow(TemplateError);
    expect(() => parseTemplate(template)).toThrow(message);
  });
});

describe('template patterns for the API server (RE2) agree with the parser', () => {
  /** A small deterministic generator, so a failure names a string that fails every time. */
  function* strings(atoms: string[], count: number, prefix = ''): Generator<string> {
    let seed = 12345;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
    for (let i = 0; i < count; i++) {
      let s = prefix;
      for (let n = 1 + (next() % 7); n > 0; n--) s += atoms[next() % atoms.length];
      yield s;
    }
  }
  const accepts = (check: () => unknown) => {
    try {
      check();
      return true;
    } catch (error) {
      if (error instanceof TemplateError) return false;
      throw error;
    }
  };

  it('PATH_TEMPLATE_PATTERN and DOT_SEGMENT_PATTERN match exactly what the path checks accept', () => {
    const pattern = new RegExp(PATH_TEMPLATE_PATTERN);
    const dots = new RegExp(DOT_SEGMENT_PATTERN);
    const atoms = [
      '/',
      '/',
      '..',
      '.',
      '%2e',
      '%2E',
      '%zz',
      '%41',
      '?',
      '#',
      '\\',
      '{',
      '}',
      ' ',
      'a',
      '=',
      '&',
    ];
    const more = ['{{ input.x }}', '{{input.a[0]}}', '{{ steps.s.response.status }}', '{{ nope }}'];
    const disagree = [...strings([...atoms, ...more], 20000, '/')].filter(
      (s) =>
        (pattern.test(s) && !s.startsWith('//') && !dots.test(s)) !==
        (accepts(() => parseTemplate(s)) && pathTemplateProblem(s) === undefined),
    );
    expect(disagree).toEqual([]);
  });

  it('HEADER_TEMPLATE_PATTERN matches exactly what the header checks accept', () => {
    const pattern = new RegExp(HEADER_TEMPLATE_PATTERN);
    const atoms = ['{', '}', '{{ input.x }}', 'Bearer ', 'a', '\r', '\n', '\0', '{{ bad }}', '}}'];
    const disagree = [...strings(atoms, 20000)].filter(
      (s) => pattern.test(s) !== (accepts(() => parseTemplate(s)) && headerTemplateProblem(s) === undefined),
    );
    expect(disagree).toEqual([]);
  });

  it('reads known shapes only: a status has no fields, headers are read one by name', () => {
    expect(() => parseTemplate('{{ steps.a.response.status.code }}')).toThrow(
      'a response status is a number',
    );
    expect(() => parseTemplate('{{ steps.a.response.headers[0] }}')).toThrow('read one by name');
    expect(() => parseTemplate('{{ steps.a.response.headers.etag }}')).not.toThrow();
  });

  it('refuses "}}" in literal text before a placeholder too', () => {
    expect(() => parseTemplate('a}}b{{ input.x }}')).toThrow('without a matching');
  });
});
