/**
 * The saga engine in this process with a given store and a step caller that answers at once
 * (as the bench's step services do, without HTTP), so the figure is the engine and its store
 * alone: what the store allows before the network and the step services count.
 */
import { Registry } from 'prom-client';
import type { SagaSpec } from '../api/index.js';
import { createLogger } from '../lib/log/index.js';
import { SagaEngine, type SagaStore, type StepCaller } from '../sidecar/saga/index.js';
import { compileSaga } from '../sidecar/config/compile.js';

let answered = 0;
/** Answers every step like test/e2e/step-services.ts does, with the fields the templates read. */
export const instantCaller: StepCaller = async () => {
  const n = ++answered;
  return {
    ok: true,
    response: {
      status: 200,
      headers: { 'content-type': 'application/json' },
      body: { validationId: `v-${n}`, recordId: `r-${n}`, sha256: `sha-${n}`, anchorId: `a-${n}` },
    },
  };
};

/**
 * Runs `count` executions with `concurrency` of them in flight at any time; returns
 * executions per second and how many did not complete.
 */
export async function engineThroughput(
  store: SagaStore,
  spec: SagaSpec,
  count: number,
  concurrency: number,
  prefix: string,
): Promise<{ perSecond: number; notCompleted: number }> {
  const engine = new SagaEngine({
    definitions: new Map([['health-data', compileSaga(spec)]]),
    store,
    call: instantCaller,
    log: createLogger('bench', { destination: { write: () => undefined } }),
    registry: new Registry(),
  });
  let next = 0;
  let notCompleted = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const i = next++;
        const { execution } = await engine.start(
          'health-data',
          { userId: `u-${i}`, type: 'bp', measurements: [120, 80] },
          `${prefix}-${i}`,
        );
        const done = await engine.waitFor(execution.id, 600_000);
        if (done.state !== 'completed') notCompleted++;
      }
    }),
  );
  const perSecond = count / ((performance.now() - started) / 1000);
  await engine.stop();
  return { perSecond, notCompleted };
}
