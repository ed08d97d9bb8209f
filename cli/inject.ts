/**
 * `aimesh inject`: offline injection, like `linkerd inject` and `istioctl kube-inject`.
 * Reads Kubernetes YAML (files, folders, or `-` for stdin), adds to every pod template the
 * sidecar the webhook would add (the same pure `decideInjection`), writes the documents to
 * stdout in order, other kinds untouched, and says on stderr what it did with each one.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parseAllDocuments, stringify } from 'yaml';
import { validateResource, type AiService } from '../api/index.js';
import {
  DEFAULT_SIDECAR_IMAGE,
  applyPatch,
  decideInjection,
  supportsNativeSidecars,
  type PodLike,
} from '../render/index.js';
import { resourceFiles } from './validate.js';

export interface InjectOptions {
  sidecarImage: string;
  nativeSidecar: boolean;
  /** Namespace of documents that name none. */
  namespace: string;
}

export interface InjectResult {
  /** The documents, injected where they hold a pod template. */
  documents: unknown[];
  /** One line per pod template: what was done and why. */
  report: string[];
  /** Templates that could not be injected because of a problem the user must fix. */
  failed: number;
}

/** Where each kind keeps its pod template. */
const TEMPLATE_PATHS: Record<string, string[]> = {
  Pod: [],
  Deployment: ['spec', 'template'],
  StatefulSet: ['spec', 'template'],
  DaemonSet: ['spec', 'template'],
  ReplicaSet: ['spec', 'template'],
  Job: ['spec', 'template'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template'],
};

export async function runInject(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      'sidecar-image': { type: 'string', default: DEFAULT_SIDECAR_IMAGE },
      'kube-version': { type: 'string', default: '1.29' },
      namespace: { type: 'string', default: 'default' },
    },
  });
  if (positionals.length === 0) {
    process.stderr.write(
      'usage: aimesh inject [--kube-version 1.x] [--sidecar-image image] <file|folder|->...\n',
    );
    return 2;
  }
  if (!/^v?\d+\.\d+(\.\d+)?$/.test(values['kube-version']))
    throw new Error(`--kube-version must look like 1.29 (got "${values['kube-version']}")`);
  const texts = await Promise.all(
    positionals.flatMap((path) =>
      path === '-'
        ? [readStdin()]
        : resourceFiles(path).map((file) => Promise.resolve(readFileSync(file, 'utf8'))),
    ),
  );
  const documents: unknown[] = [];
  for (const text of texts) {
    for (const document of parseAllDocuments(text)) {
      if (document.errors.length > 0) throw new Error(`YAML: ${document.errors[0]?.message ?? 'unreadable'}`);
      const value: unknown = document.toJS();
      if (value !== null && value !== undefined) documents.push(value);
    }
  }
  const result = injectDocuments(documents, {
    sidecarImage: values['sidecar-image'],
    nativeSidecar: supportsNativeSidecars(values['kube-version']),
    namespace: values.namespace,
  });
  process.stdout.write(result.documents.map((d) => stringify(d, { lineWidth: 0 })).join('---\n'));
  for (const line of result.report) process.stderr.write(`${line}\n`);
  return result.failed > 0 ? 1 : 0;
}

/**
 * Injects every pod template among the documents. AiServices among them adopt the pods
 * their workload selector matches, as they would in the cluster. Pure.
 */
export function injectDocuments(documents: readonly unknown[], options: InjectOptions): InjectResult {
  const flat = documents.flatMap(flatten);
  const aiServices = flat.flatMap((d) => {
    const result = (d as { kind?: unknown }).kind === 'AiService' ? validateResource(d) : undefined;
    return result?.ok && result.resource.kind === 'AiService' ? [result.resource] : [];
  });
  const result: InjectResult = { documents: [], report: [], failed: 0 };
  for (const document of documents)
    result.documents.push(injectDocument(document, aiServices, options, result));
  return result;
}

function injectDocument(
  document: unknown,
  aiServices: AiService[],
  options: InjectOptions,
  result: InjectResult,
): unknown {
  const object = document as {
    kind?: string;
    metadata?: { name?: string; namespace?: string };
    items?: unknown[];
  };
  if (object.kind === 'List' && Array.isArray(object.items))
    return {
      ...object,
      items: object.items.map((item) => injectDocument(item, aiServices, options, result)),
    };
  const path = TEMPLATE_PATHS[object.kind ?? ''];
  const what = `${object.kind ?? '?'}/${object.metadata?.name ?? '?'}`;
  if (!path) return document;
  const template = dig(object, path) as PodLike | undefined;
  if (!template || typeof template !== 'object') {
    result.report.push(`skipped  ${what}: it has no pod template at ${path.join('.')}`);
    return document;
  }
  const namespace = object.metadata?.namespace ?? options.namespace;
  const decision = decideInjection(template, {
    namespace,
    aiServices: aiServices.filter((a) => (a.metadata.namespace ?? options.namespace) === namespace),
    sidecarImage: options.sidecarImage,
    nativeSidecar: options.nativeSidecar,
    ...(object.metadata?.name ? { fallbackName: object.metadata.name } : {}),
  });
  if (!decision.inject) {
    if (decision.warnings.length > 0) result.failed++;
    result.report.push(
      `skipped  ${what}: ${decision.reason}`,
      ...decision.warnings.map((w) => `  warning: ${w}`),
    );
    return document;
  }
  result.report.push(
    `injected ${what} (configured by ${decision.source})`,
    ...decision.warnings.map((w) => `  warning: ${w}`),
  );
  const injected = applyPatch(template, decision.patch);
  return path.length === 0 ? injected : replaceAt(object, path, injected);
}

function flatten(document: unknown): unknown[] {
  const object = document as { kind?: string; items?: unknown[] } | null;
  return object?.kind === 'List' && Array.isArray(object.items) ? object.items.flatMap(flatten) : [document];
}

function dig(object: unknown, path: string[]): unknown {
  return path.reduce<unknown>((at, key) => (at as Record<string, unknown> | undefined)?.[key], object);
}

function replaceAt(object: object, path: string[], value: unknown): object {
  const [key, ...rest] = path as [string, ...string[]];
  const record = object as Record<string, unknown>;
  return { ...record, [key]: rest.length === 0 ? value : replaceAt(record[key] as object, rest, value) };
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
