/**
 * The config as the admin port shows it: everything but credentials. Values under names
 * that hold secrets (authorization, tokens, passwords, keys, cookies) are replaced, and so
 * are the user, password and secret-looking query parameters of any URL. Pure.
 */
const SECRET_NAME = /(authorization|token|secret|password|passwd|cookie|api[-_]?key|^key|credentials?)$/i;
const REDACTED = '[redacted]';

export function redact(value: unknown, name = ''): unknown {
  // A file that holds a secret is named, not read: its path is no secret.
  if (SECRET_NAME.test(name) && !/file$|path$/i.test(name)) return value === undefined ? value : REDACTED;
  if (typeof value === 'string') return redactUrl(value);
  if (Array.isArray(value)) return value.map((item) => redact(item));
  if (value !== null && typeof value === 'object')
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, redact(item, key)]));
  return value;
}

function redactUrl(text: string): string {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) return text;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    // Looks like a URL but is not one: nothing in it can be told apart as a credential.
    return text;
  }
  let changed = false;
  if (url.username || url.password) {
    url.username = 'redacted';
    url.password = '';
    changed = true;
  }
  for (const key of [...url.searchParams.keys()]) {
    if (SECRET_NAME.test(key) || /^(sig|signature)$/i.test(key)) {
      url.searchParams.set(key, REDACTED);
      changed = true;
    }
  }
  return changed ? url.toString() : text;
}
