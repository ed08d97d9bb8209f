/**
 * Token usage of streamed (SSE) answers, so they count against a channel's tokens-per-minute
 * quota as non-streamed ones do. OpenAI sends the usage of a stream in one last chunk when
 * the request sets `stream_options.include_usage`; the route asks for it, and this reads it
 * on the way through. A provider that sends no usage is charged an estimate: about four
 * characters a token (OpenAI's rule of thumb for English), for the prompt and for what was
 * streamed, so a stream the app leaves halfway is charged for what it got.
 */
import { Transform, type TransformCallback } from 'node:stream';

/** OpenAI's rule of thumb; an estimate only stands in for a provider that reports nothing. */
const CHARACTERS_PER_TOKEN = 4;
/** An event longer than this is passed on unread: usage chunks are small. */
const MAX_EVENT_BYTES = 1024 * 1024;

/**
 * The request body to forward: a streamed chat or text completion asks for usage, unless
 * the app said itself whether it wants it. `added` says the usage chunk is ours, so the app,
 * which did not ask for it, does not get it.
 */
export function requestingUsage(
  parsed: Record<string, unknown> | undefined,
  segments: readonly string[],
): { body?: Buffer; added: boolean } {
  if (parsed?.stream !== true || segments.at(-1) !== 'completions') return { added: false };
  const options = parsed.stream_options;
  if (options !== undefined && (typeof options !== 'object' || options === null || Array.isArray(options)))
    return { added: false };
  if ((options as Record<string, unknown> | undefined)?.include_usage !== undefined) return { added: false };
  const body = { ...parsed, stream_options: { ...(options as object | undefined), include_usage: true } };
  return { body: Buffer.from(JSON.stringify(body)), added: true };
}

/** The prompt's size in estimated tokens: the text of its messages (chat) or its prompt. */
export function estimatePromptTokens(parsed: Record<string, unknown> | undefined): number {
  let characters = 0;
  const count = (value: unknown): void => {
    if (typeof value === 'string') characters += value.length;
    else if (Array.isArray(value)) value.forEach(count);
    else if (value && typeof value === 'object') {
      const part = value as Record<string, unknown>;
      // Chat content parts: {"type": "text", "text": "..."}.
      count(part.content);
      count(part.text);
    }
  };
  count(parsed?.messages);
  count(parsed?.prompt);
  return Math.ceil(characters / CHARACTERS_PER_TOKEN);
}

/**
 * Passes an SSE stream on event by event while reading each `data:` JSON for the usage
 * chunk and the streamed text. With `dropUsageChunk`, the usage-only chunk (no choices) is
 * kept from the app, which did not ask for it. Holding back an incomplete event costs the
 * app nothing: an SSE client acts only on whole events.
 */
export class StreamUsage extends Transform {
  private pending: Buffer = Buffer.alloc(0);
  private reported?: number;
  private streamedCharacters = 0;

  constructor(private readonly dropUsageChunk: boolean) {
    super();
  }

  /** Tokens to charge: what the provider reported, or an estimate from the prompt and what was streamed. */
  tokens(promptTokens: number): number {
    return this.reported ?? promptTokens + Math.ceil(this.streamedCharacters / CHARACTERS_PER_TOKEN);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    for (;;) {
      const end = eventEnd(this.pending);
      if (end < 0) break;
      const event = this.pending.subarray(0, end);
      this.pending = this.pending.subarray(end);
      if (this.observe(event)) this.push(event);
    }
    if (this.pending.length > MAX_EVENT_BYTES) {
      this.push(this.pending);
      this.pending = Buffer.alloc(0);
    }
    done();
  }

  override _flush(done: TransformCallback): void {
    if (this.pending.length > 0 && this.observe(this.pending)) this.push(this.pending);
    this.pending = Buffer.alloc(0);
    done();
  }

  /** Reads one event; false when it is the usage chunk the app is not to get. */
  private observe(event: Buffer): boolean {
    const data = event
      .toString('utf8')
      .split(/\r?\n|\r/)
      .filter((line) => line.startsWith('data:'))
      .map((line) => line.slice(5).replace(/^ /, ''))
      .join('\n');
    if (!data || data === '[DONE]') return true;
    let chunk: Record<string, unknown>;
    try {
      chunk = JSON.parse(data) as Record<string, unknown>;
    } catch {
      // Not JSON: nothing to count, the app gets it as it is.
      this.streamedCharacters += data.length;
      return true;
    }
    const usage = chunk.usage as { total_tokens?: unknown } | null | undefined;
    if (usage && typeof usage.total_tokens === 'number' && usage.total_tokens >= 0)
      this.reported = usage.total_tokens;
    const choices = Array.isArray(chunk.choices) ? (chunk.choices as Record<string, unknown>[]) : [];
    for (const choice of choices) {
      const delta = choice?.delta as Record<string, unknown> | undefined;
      for (const text of [delta?.content, delta?.reasoning_content, choice?.text])
        if (typeof text === 'string') this.streamedCharacters += text.length;
    }
    return !(this.dropUsageChunk && usage && choices.length === 0);
  }
}

/** Where the first complete event ends (after its blank line), or -1. */
function eventEnd(buffer: Buffer): number {
  for (let i = 0; i < buffer.length - 1; i++) {
    if (buffer[i] !== 0x0a && buffer[i] !== 0x0d) continue;
    // \n\n, \r\r, \r\n\r\n: a line break followed by another.
    const next = buffer[i] === 0x0d && buffer[i + 1] === 0x0a ? i + 2 : i + 1;
    if (next >= buffer.length) return -1;
    if (buffer[next] === 0x0a) return next + 1;
    if (buffer[next] !== 0x0d) continue;
    // A second \r may be the first half of \r\n: wait for the byte after it.
    if (next + 1 >= buffer.length) return -1;
    return buffer[next + 1] === 0x0a ? next + 2 : next + 1;
  }
  return -1;
}
