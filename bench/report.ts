/**
 * Writes one benchmark's figures into BENCHMARKS.md, replacing that benchmark's section
 * and keeping the others, with the machine and the command that produced them.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { REPO_DIR } from '../test/env/components.js';

const FILE = join(REPO_DIR, 'BENCHMARKS.md');
const TITLE =
  '# Benchmarks\n\nWritten by the programs in `bench/`; each section says the machine and the command. Do not edit by hand.\n';

export function machine(): string {
  const cpu = cpus()[0]?.model.trim() ?? 'unknown CPU';
  return `${cpus().length} × ${cpu}, ${Math.round(totalmem() / 2 ** 30)} GiB RAM, Node ${process.version}, ${process.platform}/${process.arch}`;
}

export function writeSection(id: string, title: string, command: string, body: string): void {
  const start = `<!-- bench:${id} -->`;
  const end = `<!-- /bench:${id} -->`;
  const section = [
    start,
    `## ${title}`,
    '',
    `- command: \`${command}\``,
    `- machine: ${machine()}`,
    `- date: ${new Date().toISOString().slice(0, 10)}`,
    // Times measured on a busy machine are not the code's: the load says how busy it was.
    `- load average when written (1/5/15 min): ${loadavg()
      .map((l) => l.toFixed(1))
      .join(' / ')} on ${cpus().length} cores`,
    '',
    body.trimEnd(),
    end,
  ].join('\n');
  let text = existsSync(FILE) ? readFileSync(FILE, 'utf8') : TITLE;
  const from = text.indexOf(start);
  const to = text.indexOf(end);
  text =
    from >= 0 && to > from
      ? text.slice(0, from) + section + text.slice(to + end.length)
      : `${text.trimEnd()}\n\n${section}\n`;
  writeFileSync(FILE, text);
}

export function table(header: string[], rows: (string | number)[][]): string {
  return [
    `| ${header.join(' | ')} |`,
    `|${header.map(() => '---').join('|')}|`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
}

/** User + system CPU time of a process (all its threads), in milliseconds. */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // USER_HZ is 100 on Linux
}

/**
 * How busy the machine's CPUs are from now until the returned function is called, as a
 * share of all of them (from /proc/stat): whether a latency figure was taken on a machine
 * with time to spare or one whose cores were all taken.
 */
export function machineBusy(): () => number {
  const read = () => {
    const fields = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '')
      .trim()
      .split(/\s+/)
      .slice(1)
      .map(Number);
    const total = fields.reduce((a, b) => a + b, 0);
    const idle = (fields[3] ?? 0) + (fields[4] ?? 0); // idle + iowait
    return { total, idle };
  };
  const before = read();
  return () => {
    const after = read();
    const total = after.total - before.total;
    return total > 0 ? 1 - (after.idle - before.idle) / total : 0;
  };
}
