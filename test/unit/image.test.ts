import { describe, expect, it } from '@jest/globals';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { IMAGE_REPOSITORY, aimeshImageName, pruneOlderBuilds } from '../../image/build.js';
import { REPO_DIR } from '../env/components.js';

const chartDir = join(REPO_DIR, 'charts', 'aimesh-operator');
const packageVersion = (
  JSON.parse(readFileSync(join(REPO_DIR, 'package.json'), 'utf8')) as { version: string }
).version;

// The chart's image tag defaults to appVersion, and `npm run image` tags the image with the
// package version: if they drift, `helm install` asks for an image nobody built.
describe('image name', () => {
  it('the chart appVersion is the package version', () => {
    const chart = parse(readFileSync(join(chartDir, 'Chart.yaml'), 'utf8')) as { appVersion: string };
    expect(String(chart.appVersion)).toBe(packageVersion);
  });

  it('the chart names the repository the image is built as, tagged with the package version', () => {
    const values = parse(readFileSync(join(chartDir, 'values.yaml'), 'utf8')) as {
      image: { repository: string; tag: string };
    };
    expect(values.image.repository).toBe(IMAGE_REPOSITORY);
    expect(values.image.tag).toBe('');
    expect(aimeshImageName()).toBe(`${IMAGE_REPOSITORY}:${packageVersion}`);
  });
});

describe('image cache', () => {
  it('keeps one build per image: the new tarball stays, older digests of the same image go', () => {
    const dir = mkdtempSync(join(tmpdir(), 'aimesh-image-cache-'));
    try {
      const files = [
        'ghcr.io_aimesh_aimesh_0.1.0-aaaa1111.tar',
        'ghcr.io_aimesh_aimesh_0.1.0-bbbb2222.tar',
        'ghcr.io_aimesh_aimesh_0.2.0-cccc3333.tar',
        'aimesh.test_app-dddd4444.tar',
      ];
      for (const file of files) writeFileSync(join(dir, file), '');
      pruneOlderBuilds(join(dir, 'ghcr.io_aimesh_aimesh_0.1.0-bbbb2222.tar'));
      expect(readdirSync(dir).sort()).toEqual([
        'aimesh.test_app-dddd4444.tar',
        'ghcr.io_aimesh_aimesh_0.1.0-bbbb2222.tar',
        'ghcr.io_aimesh_aimesh_0.2.0-cccc3333.tar',
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
