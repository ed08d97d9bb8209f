/**
 * The Grafana dashboard and the alert rules only query metrics the code exports: a renamed
 * metric fails here instead of leaving an empty panel or an alert that never fires.
 */
import { describe, expect, it } from '@jest/globals';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { parse } from 'yaml';
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
