import { describe, expect, it } from '@jest/globals';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { generatedFiles } from '../../../tools/generated.js';
import { REPO_DIR } from '../../env/components.js';

type Node = Record<string, unknown>;

describe('generated CRDs', () => {
  const files = generatedFiles();

  it('crds/, the chart CRDs and RBAC, and docs/api.md are what `npm run crds` produces, byte for byte', () => {
    for (const folder of ['crds', 'charts/aimesh-operator/crds']) {
      const committed = readdirSync(join(REPO_DIR, folder)).map((f) => `${folder}/${f}`);
      expect(committed.sort()).toEqual(
        Object.keys(files)
          .filter((p) => p.startsWith(`${folder}/`))
          .sort(),
      );
    }
    for (const [path, content] of Object.entries(files)) {
      expect({ path, content: readFileSync(join(REPO_DIR, path), 'utf8') }).toEqual({ path, content });
    }
  });

  const crds = Object.entries(files)
    .filter(([path]) => path.startsWith('crds/'))
    .map(([, text]) => parse(text) as Node);

  it.each(crds.map((crd) => [(crd.metadata as Node).name, crd]))(
    '%s has a structural schema',
    (_name, crd) => {
      const version = ((crd as Node).spec as { versions: Node[] }).versions[0] as Node;
      const schema = (version.schema as Node).openAPIV3Schema as Node;
      const problems: string[] = [];
      walk(schema, '', problems);
      expect(problems).toEqual([]);
      expect(version.subresources).toEqual({ status: {} });
    },
  );

  it('AiService and Saga carry printer columns, short names and the aimesh category', () => {
    const byKind: Record<string, Node> = Object.fromEntries(
      crds.map((crd) => [((crd.spec as Node).names as Node).kind, crd.spec as Node]),
    );
    const columns = (kind: string) =>
      (((byKind[kind]?.versions as Node[])[0] as Node).additionalPrinterColumns as Node[]).map((c) => c.name);
    expect(columns('AiService')).toEqual(['Ready', 'Replicas', 'Available', 'Age']);
    expect(columns('Saga')).toEqual(['Orchestrator', 'Steps', 'Ready', 'Age']);
    for (const spec of Object.values(byKind)) {
      expect((spec.names as Node).categories).toEqual(['aimesh']);
      expect(((spec.names as Node).shortNames as string[]).length).toBeGreaterThan(0);
    }
  });
});

/** Kubernetes' structural schema rules, as far as the API server enforces them. */
function walk(node: Node, path: string, problems: string[]): void {
  const typed =
    typeof node.type === 'string' ||
    node['x-kubernetes-int-or-string'] === true ||
    node['x-kubernetes-preserve-unknown-fields'] === true;
  if (!typed) problems.push(`${path || '<root>'}: no type`);
  for (const banned of ['$ref', 'definitions', '$defs', 'oneOf', 'allOf', 'not', 'nullable']) {
    if (banned in node) problems.push(`${path}: has ${banned}`);
  }
  if (node.properties && 'additionalProperties' in node)
    problems.push(`${path}: additionalProperties beside properties`);
  if (node.anyOf && node['x-kubernetes-int-or-string'] !== true) problems.push(`${path}: anyOf`);
  for (const [key, child] of Object.entries((node.properties as Record<string, Node>) ?? {})) {
    walk(child, `${path}.${key}`, problems);
  }
  if (node.items) walk(node.items as Node, `${path}[]`, problems);
  if (typeof node.additionalProperties === 'object')
    walk(node.additionalProperties as Node, `${path}{}`, problems);
}
