import { describe, expect, it } from '@jest/globals';
import { TemplateError, parseTemplate, referencedStep, templateExpressions } from '../../../api/index.js';

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
