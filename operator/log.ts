/** JSON lines on stdout, one object per event, as log collectors expect. */
export interface Logger {
  info: (message: string, fields?: Record<string, unknown>) => void;
  warn: (message: string, fields?: Record<string, unknown>) => void;
  error: (message: string, fields?: Record<string, unknown>) => void;
}

export function jsonLogger(
  component: string,
  write: (line: string) => void = (l) => process.stdout.write(l),
): Logger {
  const log =
    (level: string) =>
    (message: string, fields: Record<string, unknown> = {}) =>
      write(`${JSON.stringify({ time: new Date().toISOString(), level, component, message, ...fields })}\n`);
  return { info: log('info'), warn: log('warn'), error: log('error') };
}
