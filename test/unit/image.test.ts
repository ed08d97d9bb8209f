import { describe, expect, it } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { IMAGE_REPOSITORY, aimeshImageName } from '../../image/build.js';
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
