/**
 * Sums a V8 CPU profile (node --cpu-prof) by where the time went, for the benchmark notes:
 * which share is aimesh's own code, which is Node's HTTP and sockets, the system calls that
 * write to sockets, the garbage collector, and each library.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { table } from './report.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** The category of one profile frame, by its script. */
function category(frame: ProfileNode['callFrame']): string {
  const { url, functionName } = frame;
  if (!url) {
    if (functionName === '(garbage collector)') return 'garbage collector';
    if (functionName === '(program)') return 'V8 and native (program)';
    if (/^write|^writev$|^read/.test(functionName)) return 'socket system calls (write, writev)';
    return `native: ${functionName || '(anonymous)'}`;
  }
  const library = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)?.[1];
  if (library) return `library: ${library}`;
  const own = /\/dist\/([^/]+)\//.exec(url)?.[1];
  if (own) return `aimesh: ${own}/`;
  if (url.startsWith('node:')) {
    if (/_http|http_parser|internal\/http/.test(url)) return 'Node: HTTP';
    if (/net|stream|stream_base/.test(url)) return 'Node: sockets and streams';
    if (/module|loader|esm|cjs/.test(url)) return 'Node: module loading (start-up)';
    return 'Node: other (events, timers, ticks)';
  }
  return 'other';
}

/** A markdown summary of the one .cpuprofile in `dir`: busy time by category, top functions. */
export function summarizeCpuProfile(dir: string): string {
  const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  if (!file) return 'No CPU profile was written.';
  const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Profile;
  const frames = new Map(profile.nodes.map((n) => [n.id, n.callFrame]));
  const self = new Map<number, number>();
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));

  const byCategory = new Map<string, number>();
  const byFunction = new Map<string, number>();
  let busy = 0;
  let idle = 0;
  for (const [id, micros] of self) {
    const frame = frames.get(id);
    if (!frame) continue;
    if (frame.functionName === '(idle)') {
      idle += micros;
      continue;
    }
    busy += micros;
    const cat = category(frame);
    byCategory.set(cat, (byCategory.get(cat) ?? 0) + micros);
    const where = frame.url
      ? `${frame.url.replace(/^.*\/(node_modules|dist)\//, '')}:${frame.lineNumber + 1}`
      : '';
    const name = `${frame.functionName || '(anonymous)'}${where ? ` (${where})` : ''}`;
    byFunction.set(name, (byFunction.get(name) ?? 0) + micros);
  }
  const rows = (map: Map<string, number>, n: number) =>
    [...map]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, micros]) => [name, (micros / 1000).toFixed(0), `${((100 * micros) / busy).toFixed(1)}%`]);
  return [
    `Busy ${(busy / 1000).toFixed(0)} ms of ${((busy + idle) / 1000).toFixed(0)} ms profiled (the rest idle).`,
    '',
    table(['where', 'self ms', 'share of busy'], rows(byCategory, 12)),
    '',
    'Top functions by self time:',
    '',
    table(['function', 'self ms', 'share of busy'], rows(byFunction, 12)),
  ].join('\n');
}
