/**
 * The Grafana dashboard and the alert rules only query metrics the code exports: a renamed
 * metric fails here instead of leaving an empty panel or an alert that never fires.
 */
import { describe, expect, it } from '@jest/globals';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { parse } from 'yaml';
import { z } from 'zod';
import { REPO_DIR } from '../env/components.js';

const CHART = join(REPO_DIR, 'charts', 'aimesh-operator');
/** Prefixes the operator and the sidecar give prom-client's default process metrics. */
const DEFAULT_METRIC_PREFIXES = ['aimesh_operator_', 'aimesh_sidecar_'];
/** Series Prometheus makes itself for every target. */
const PROMETHEUS_SERIES = ['up'];
const HISTOGRAM_SERIES = /_(bucket|sum|count)$/;

/** Every metric name written as a string literal in the product code (not a prefix). */
function metricsInCode(): Set<string> {
  const names = new Set<string>();
  for (const file of ['lib', 'operator', 'sidecar'].flatMap((dir) => tsFiles(join(REPO_DIR, dir)))) {
    for (const [, name] of readFileSync(file, 'utf8').matchAll(/'(aimesh_[a-z0-9_]*[a-z0-9])'/g)) {
      names.add(name as string);
    }
  }
  for (const prefix of DEFAULT_METRIC_PREFIXES) {
    const registry = new Registry();
    collectDefaultMetrics({ register: registry, prefix });
    for (const metric of registry.getMetricsAsArray()) names.add(metric.name);
  }
  return names;
}

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) return tsFiles(path);
    return entry.endsWith('.ts') ? [path] : [];
  });
}

interface Panel {
  title: string;
  targets?: { expr: string }[];
  panels?: Panel[];
}

function dashboardQueries(): { where: string; expr: string }[] {
  return readdirSync(join(CHART, 'dashboards')).flatMap((file) => {
    const dashboard = JSON.parse(readFileSync(join(CHART, 'dashboards', file), 'utf8')) as {
      panels: Panel[];
      templating: { list: { name: string; definition?: string }[] };
    };
    const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
    return [
      ...panels.flatMap((p) =>
        (p.targets ?? []).map((t) => ({ where: `${file} panel "${p.title}"`, expr: t.expr })),
      ),
      ...dashboard.templating.list
        .filter((v) => v.definition)
        .map((v) => ({ where: `${file} variable ${v.name}`, expr: v.definition as string })),
    ];
  });
}

function alertQueries(): { where: string; expr: string }[] {
  const { groups } = parse(readFileSync(join(CHART, 'files', 'alerts.yaml'), 'utf8')) as {
    groups: { rules: { alert: string; expr: string }[] }[];
  };
  return groups.flatMap((g) => g.rules.map((r) => ({ where: `alert ${r.alert}`, expr: r.expr })));
}

/** Metric names in a PromQL expression: identifiers followed by a selector, a range or a space. */
function metricsOf(expr: string): string[] {
  const withoutStrings = expr.replace(/"[^"]*"/g, '""');
  return [...withoutStrings.matchAll(/\b(aimesh_[a-z0-9_]+|up)\b(?=\s*[{[),\s]|$)/g)].map(
    (m) => m[1] as string,
  );
}

describe('dashboards and alerts', () => {
  const known = metricsInCode();
  const exists = (name: string) =>
    known.has(name) || PROMETHEUS_SERIES.includes(name) || known.has(name.replace(HISTOGRAM_SERIES, ''));

  it('finds the metrics the code exports', () => {
    for (const name of [
      'aimesh_operator_is_leader',
      'aimesh_sidecar_breaker_state',
      'aimesh_saga_compensation_failed_total',
      'aimesh_ai_failovers_total',
      'aimesh_operator_process_cpu_seconds_total',
    ]) {
      expect(known).toContain(name);
    }
  });

  it.each([
    ['the dashboard', dashboardQueries],
    ['the alert rules', alertQueries],
  ])('%s only query metrics that exist', (_, queries) => {
    const all = queries();
    expect(all.length).toBeGreaterThan(5);
    const unknown = all.flatMap(({ where, expr }) =>
      metricsOf(expr)
        .filter((name) => !exists(name))
        .map((name) => `${where}: ${name}`),
    );
    expect(unknown).toEqual([]);
    for (const { where, expr } of all)
      expect({ where, metrics: metricsOf(expr).length > 0 }).toEqual({ where, metrics: true });
  });

  it('has the alerts the runbook promises', () => {
    expect(alertQueries().map((q) => q.where)).toEqual(
      expect.arrayContaining([
        'alert AimeshCircuitBreakerOpen',
        'alert AimeshSagaCompensationFailed',
        'alert AimeshSagaExecutionsStuck',
        'alert AimeshReconcileErrors',
        'alert AimeshOperatorNoLeader',
        'alert AimeshSidecarScrapeMissing',
      ]),
    );
  });
});

/**
 * What Grafana needs to load a dashboard from the sidecar's ConfigMap and draw every panel
 * from the chosen Prometheus. There is no JSON Schema for Grafana's dashboard model on npm
 * (@grafana/schema ships TypeScript types only), so this is the part of the model we use.
 */
const datasource = z.strictObject({ type: z.literal('prometheus'), uid: z.literal('${datasource}') });
const gridPos = z
  .strictObject({
    h: z.int().min(1),
    w: z.int().min(1).max(24),
    x: z.int().min(0).max(23),
    y: z.int().min(0),
  })
  .refine((g) => g.x + g.w <= 24, 'gridPos runs past the 24 columns');
const target = z.looseObject({
  refId: z.string().regex(/^[A-Z]$/),
  expr: z.string().min(1),
  datasource: datasource.optional(),
});
const graphPanel = z.looseObject({
  id: z.int().min(1),
  type: z.enum(['timeseries', 'stat', 'gauge', 'table', 'bargauge']),
  title: z.string().min(1),
  gridPos,
  datasource: datasource,
  targets: z
    .array(target)
    .min(1)
    .refine((t) => new Set(t.map((x) => x.refId)).size === t.length, 'refIds repeat'),
});
const rowPanel = z.looseObject({
  id: z.int().min(1),
  type: z.literal('row'),
  title: z.string().min(1),
  gridPos,
  collapsed: z.boolean().optional(),
  panels: z.array(graphPanel).optional(),
});
const dashboardSchema = z.looseObject({
  uid: z.string().regex(/^[a-zA-Z0-9_-]{1,40}$/),
  title: z.string().min(1),
  schemaVersion: z.int().min(36),
  time: z.strictObject({ from: z.string(), to: z.string() }),
  panels: z.array(z.union([rowPanel, graphPanel])).min(1),
  templating: z.strictObject({
    list: z.array(z.looseObject({ name: z.string().regex(/^\w+$/), type: z.string() })),
  }),
});

describe('the dashboard JSON', () => {
  const files = readdirSync(join(CHART, 'dashboards'));

  it.each(files)('%s has what Grafana needs to load it', (file) => {
    const raw = JSON.parse(readFileSync(join(CHART, 'dashboards', file), 'utf8')) as unknown;
    const parsed = dashboardSchema.safeParse(raw);
    expect(parsed.success ? [] : parsed.error.issues).toEqual([]);
    const dashboard = dashboardSchema.parse(raw);
    const panels = dashboard.panels.flatMap((p) => [p, ...((p as { panels?: (typeof p)[] }).panels ?? [])]);
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    // Panels side by side must not overlap, or Grafana moves them about on load.
    const cells = new Map<string, number>();
    for (const { id, gridPos: g } of panels)
      for (let x = g.x; x < g.x + g.w; x++)
        for (let y = g.y; y < g.y + g.h; y++) {
          expect({ cell: `${x},${y}`, taken: cells.get(`${x},${y}`), by: id }).toEqual({
            cell: `${x},${y}`,
            by: id,
          });
          cells.set(`${x},${y}`, id);
        }
    // The data source is a variable, so the dashboard works with whatever Prometheus Grafana has.
    expect(dashboard.templating.list).toContainEqual(
      expect.objectContaining({ name: 'datasource', type: 'datasource', query: 'prometheus' }),
    );
    const defined = new Set(dashboard.templating.list.map((v) => v.name));
    const used = JSON.stringify(dashboard.panels).matchAll(/\$\{?(\w+)/g);
    for (const [, name] of used) if (!name?.startsWith('__')) expect(defined).toContain(name);
  });
});
