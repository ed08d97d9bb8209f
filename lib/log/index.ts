/**
 * The one logger: JSON lines through pino (levels, asynchronous writes, redaction), behind
 * a small interface so call sites read `log.info(message, fields)` and never format lines
 * themselves.
 */
import { pino, type DestinationStream, type Logger as PinoLogger } from 'pino';

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug: (message: string, fields?: LogFields) => void;
  info: (message: string, fields?: LogFields) => void;
  warn: (message: string, fields?: LogFields) => void;
  error: (message: string, fields?: LogFields) => void;
  /** A logger whose every line carries these fields too. */
  child: (fields: LogFields) => Logger;
  /** Writes out what is buffered; call before the process exits on purpose. */
  flush: () => void;
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface LoggerOptions {
  level?: LogLevel;
  /** Where lines go; asynchronous stdout when unset. Tests pass a stream they read. */
  destination?: DestinationStream;
}

/**
 * Field names whose values never reach a log line, wherever they appear up to three levels
 * deep: credentials must not leak through a log of a config or a request.
 */
const SECRET_KEYS = [
  'authorization',
  'Authorization',
  'apiKey',
  'token',
  'password',
  'secret',
  'cookie',
  'x-api-key',
];
const REDACTED_PATHS = SECRET_KEYS.flatMap((key) => [key, `*.${key}`, `*.*.${key}`, `*.*.*.${key}`]).map(
  (path) => path.replace(/\.(x-api-key)$/, '["$1"]').replace(/^(x-api-key)$/, '["$1"]'),
);

export function createLogger(component: string, options: LoggerOptions = {}): Logger {
  const level = options.level ?? levelFromEnv();
  const destination = options.destination ?? stdout();
  const base = pino(
    {
      level,
      base: { component },
      messageKey: 'message',
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      serializers: { error: serializeError, err: serializeError },
    },
    destination,
  );
  return wrap(base);
}

let sharedStdout: ReturnType<typeof pino.destination> | undefined;

/**
 * One asynchronous stdout stream per process, flushed synchronously on exit so the last
 * lines before a deliberate exit are not lost.
 */
function stdout(): DestinationStream {
  if (!sharedStdout) {
    const stream = pino.destination({ dest: 1, sync: false, minLength: 0 });
    process.once('exit', () => stream.flushSync());
    sharedStdout = stream;
  }
  return sharedStdout;
}

/** LOG_LEVEL (debug, info, warn, error) sets the level; info otherwise. */
function levelFromEnv(): LogLevel {
  const value = process.env.LOG_LEVEL?.toLowerCase();
  return value === 'debug' || value === 'warn' || value === 'error' ? value : 'info';
}

function wrap(logger: PinoLogger): Logger {
  const at =
    (level: LogLevel) =>
    (message: string, fields?: LogFields): void => {
      if (fields) logger[level](fields, message);
      else logger[level](message);
    };
  return {
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: (fields) => wrap(logger.child(fields)),
    flush: () => logger.flush(),
  };
}

/** Errors become their message and stable code, not `{}` as JSON.stringify makes them. */
function serializeError(error: unknown): unknown {
  if (!(error instanceof Error)) return error;
  const code = (error as { code?: unknown }).code;
  return { message: error.message, ...(code === undefined ? {} : { code }), type: error.name };
}
