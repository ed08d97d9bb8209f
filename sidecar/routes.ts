/**
 * What a request is routed with: every upstream's stack and the AI route, built from one
 * compiled config. A reload builds a new Routes and swaps it in whole; a request keeps the
 * Routes it started with to its end. Upstreams whose settings did not change carry over
 * with their live state (endpoints, breakers, load, connections); the others are retired
 * and close once their last call is over.
 */
import { AimeshError } from '../lib/errors/index.js';
import type { Logger } from '../lib/log/index.js';
import type { SidecarMetrics } from './admin/index.js';
import { AiRoute, aiRouteSignature } from './ai/index.js';
import type { CompiledConfig, CompiledUpstream } from './config/compile.js';
import { H2Transport, HttpTransport, Upstream, type StackTracing, type Transport } from './stack/index.js';

export interface RoutesDeps {
  metrics: SidecarMetrics;
  log: Logger;
  tracing: StackTracing;
  /** The I/O edge per upstream; the real transports unless a test passes a fake. */
  transport?: (upstream: CompiledUpstream) => Transport;
}

export class Routes {
  private constructor(
    readonly config: CompiledConfig,
    private readonly upstreams: ReadonlyMap<string, Upstream>,
    readonly ai: AiRoute | undefined,
  ) {}

  /** Builds the routes of `config`, carrying over what `previous` had unchanged. */
  static build(config: CompiledConfig, deps: RoutesDeps, previous?: Routes): Routes {
    const upstreams = new Map<string, Upstream>();
    for (const compiled of config.upstreams) {
      const kept = previous?.upstreams.get(compiled.name);
      upstreams.set(
        compiled.name,
        kept && kept.config.signature === compiled.signature
          ? kept
          : new Upstream(compiled, {
              metrics: deps.metrics,
              log: deps.log.child({ upstream: compiled.name }),
              tracing: deps.tracing,
              transport:
                deps.transport?.(compiled) ??
                (compiled.protocol === 'grpc' ? new H2Transport() : new HttpTransport({ log: deps.log })),
            }),
      );
    }
    const kept = previous?.ai;
    const ai =
      config.channels.length === 0
        ? undefined
        : kept && kept.signature === aiRouteSignature(config.channels, config.ai)
          ? kept
          : new AiRoute(config.channels, config.ai, { ...deps, log: deps.log.child({ route: 'ai' }) });
    return new Routes(config, upstreams, ai);
  }

  /** The upstream named `name`, or an error that says how to add it. */
  upstream(name: string): Upstream {
    const upstream = this.upstreams.get(name);
    if (upstream) return upstream;
    throw new AimeshError(
      'upstream.unknown',
      `"${name}" is not an upstream of this service; add it to spec.upstreams of the AiService`,
      { details: { upstream: name } },
    );
  }

  find(name: string): Upstream | undefined {
    return this.upstreams.get(name);
  }

  all(): Upstream[] {
    return [...this.upstreams.values()];
  }

  /** Retires what `next` no longer uses, once the calls on it are over. */
  retireUnusedBy(next: Routes): void {
    for (const [name, upstream] of this.upstreams) {
      if (next.upstreams.get(name) !== upstream) upstream.retire();
      // Replaced upstreams keep their series (same name, same endpoints); removed ones lose them.
      if (!next.upstreams.has(name)) upstream.forgetSeries();
    }
    if (this.ai && next.ai !== this.ai) this.ai.retire();
  }

  async close(): Promise<void> {
    await Promise.all([...this.all().map((u) => u.close()), this.ai?.close()]);
  }
}
