import { describe, expect, it } from '@jest/globals';
import { Readable } from 'node:stream';
import { estimatePromptTokens, requestingUsage, StreamUsage } from '../../../sidecar/ai/usage.js';

/** Runs `pieces` through a StreamUsage as one stream; what came out and the tokens to charge. */
async function through(pieces: string[], dropUsageChunk: boolean, promptTokens = 0) {
  const usage = new StreamUsage(dropUsageChunk);
  let out = '';
  for await (const chunk of Readable.from(pieces.map((p) => Buffer.from(p))).pipe(usage))
    out += (chunk as Buffer).toString();
  return { out, tokens: usage.tokens(promptTokens) };
}

const event = (data: unknown, eol = '\n') => `data: ${JSON.stringify(data)}${eol}${eol}`;
const delta = (content: string) => ({ choices: [{ index: 0, delta: { content } }], usage: null });
const usageChunk = { choices: [], usage: { total_tokens: 77 } };

describe('streamed answer usage', () => {
  it('asks for usage on streamed completions only, and never overrides what the app said', () => {
    const asked = requestingUsage({ model: 'm', stream: true, stream_options: {} }, ['chat', 'completions']);
    expect(asked.added).toBe(true);
    expect(JSON.parse(String(asked.body))).toEqual({
      model: 'm',
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(requestingUsage({ stream: false }, ['chat', 'completions'])).toEqual({ added: false });
    expect(requestingUsage({ stream: true }, ['embeddings'])).toEqual({ added: false });
    expect(
      requestingUsage({ stream: true, stream_options: { include_usage: false } }, ['completions']),
    ).toEqual({ added: false });
    expect(requestingUsage({ stream: true, stream_options: 'odd' }, ['completions'])).toEqual({
      added: false,
    });
  });

  it('charges the reported usage and keeps the usage chunk only from an app that did not ask', async () => {
    const pieces = [event(delta('hello')), event(usageChunk), 'data: [DONE]\n\n'];
    const dropped = await through(pieces, true);
    expect(dropped.tokens).toBe(77);
    expect(dropped.out).toBe(`${event(delta('hello'))}data: [DONE]\n\n`);
    const kept = await through(pieces, false);
    expect(kept).toEqual({ out: pieces.join(''), tokens: 77 });
  });

  it('reads events cut anywhere, with any line ending, and passes every byte on', async () => {
    for (const eol of ['\n', '\r\n', '\r']) {
      const whole =
        event(delta('a'.repeat(40)), eol) + event(delta('b'.repeat(40)), eol) + `data: [DONE]${eol}${eol}`;
      for (let cut = 1; cut < whole.length; cut += 7) {
        const { out, tokens } = await through([whole.slice(0, cut), whole.slice(cut)], true, 5);
        expect(out).toBe(whole);
        // No usage reported: the prompt's estimate plus 80 characters at four a token.
        expect(tokens).toBe(25);
      }
    }
  });

  it('estimates the prompt from the text of its messages, content parts included', () => {
    expect(
      estimatePromptTokens({
        messages: [
          { role: 'system', content: 'x'.repeat(8) },
          { role: 'user', content: [{ type: 'text', text: 'y'.repeat(8) }] },
        ],
      }),
    ).toBe(4);
    expect(estimatePromptTokens({ prompt: 'z'.repeat(9) })).toBe(3);
    expect(estimatePromptTokens(undefined)).toBe(0);
  });
});
