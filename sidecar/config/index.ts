/**
 * The sidecar's configuration: read from a file (the operator's ConfigMap, mounted),
 * validated with the schema in api/, and reloaded when the file changes. A config that
 * fails validation is reported and ignored: the sidecar keeps running on the last good one.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fieldPath, sidecarConfig, type SidecarConfig } from '../../api/index.js';

export type LoadResult = { ok: true; config: SidecarConfig; hash: string } | { ok: false; errors: string[] };

/** Parses and validates sidecar config text (JSON or YAML). Pure. */
export function parseSidecarConfig(text: string): LoadResult {
  let raw: unknown;
  try {
    raw = parseJsonOrYaml(text);
  } catch (error) {
    return { ok: false, errors: [`not valid YAML or JSON: ${(error as Error).message}`] };
  }
  const parsed = sidecarConfig.safeParse(raw);
  if (!parsed.success) {
    return {
      ok: false,
      errors: parsed.error.issues.map((i) => `${fieldPath(i.path) || '(root)'}: ${i.message}`),
    };
  }
  return { ok: true, config: parsed.data, hash: createHash('sha256').update(text).digest('hex') };
}

/**
 * JSON (what the operator's ConfigMap holds) is parsed as JSON; anything else as YAML, whose
 * parser is loaded only then: it is about 70 modules every sidecar would otherwise carry.
 */
function parseJsonOrYaml(text: string): unknown {
  if (/^\s*[{[]/.test(text)) {
    try {
      return JSON.parse(text);
    } catch {
      // Flow-style YAML also starts with { or [; the YAML parser decides, with its message.
    }
  }
  const { parse } = createRequire(import.meta.url)('yaml') as typeof import('yaml');
  return parse(text);
}

export function loadSidecarConfig(file: string): LoadResult {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    return { ok: false, errors: [`cannot read ${file}: ${(error as Error).message}`] };
  }
  const result = parseSidecarConfig(text);
  return result.ok ? result : { ok: false, errors: result.errors.map((e) => `${file}: ${e}`) };
}

/**
 * Polls `file` (ConfigMap updates swap a symlink, which fs.watch misses) and calls
 * `onChange` with each new valid config, or `onInvalid` with the errors of a bad one.
 */
export function watchSidecarConfig(
  file: string,
  currentHash: string,
  onChange: (config: SidecarConfig) => void,
  onInvalid: (errors: string[]) => void,
  intervalMs = 1000,
): () => void {
  let lastHash = currentHash;
  let lastBadText = '';
  const timer = setInterval(() => {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      // Missing for an instant while the kubelet swaps the ConfigMap's symlink: the next
      // poll reads it; the config being served is unaffected.
      return;
    }
    const hash = createHash('sha256').update(text).digest('hex');
    if (hash === lastHash || text === lastBadText) return;
    const result = parseSidecarConfig(text);
    if (result.ok) {
      lastHash = hash;
      lastBadText = '';
      onChange(result.config);
    } else {
      lastBadText = text;
      onInvalid(result.errors);
    }
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
