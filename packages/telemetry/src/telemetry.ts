import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { context, metrics, propagation, trace, type Tracer } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { PrometheusExporter } from "@opentelemetry/exporter-prometheus";
import { NodeSDK } from "@opentelemetry/sdk-node";
import { SimpleSpanProcessor, type ReadableSpan, type SpanExporter, type SpanProcessor } from "@opentelemetry/sdk-trace-base";
import type { Logger } from "pino";
import { Readiness, type ReadinessCheck } from "./health.js";
import { PostroomMetrics } from "./metrics.js";

export interface TelemetryOptions {
  /** kebab-case service name: the traces' `service.name` and the metrics' `service_name` label. */
  service: string;
  /**
   * Port of the operations endpoint (/metrics, /healthz, /readyz); 0 picks a free one; undefined
   * serves nothing (several services on one host without ports assigned must not collide).
   */
  port?: number | undefined;
  /**
   * Address to listen on (default 127.0.0.1: the endpoint has no authentication, so outside
   * Kubernetes only this machine reaches it; the chart sets 0.0.0.0 and its NetworkPolicy admits
   * only the scraper). See {@link operationsHost}.
   */
  host?: string | undefined;
  /**
   * Where spans go. Tests pass an in-memory exporter. Without one, the standard OTEL_* variables
   * decide (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_EXPORTER ...); with none of those set, spans
   * are still created — their ids travel in NATS headers and appear in log lines — but not exported.
   */
  spanExporter?: SpanExporter;
  /** Logs where the endpoint listens and problems exporting. */
  logger?: Logger;
}

/** What `startTelemetry` started. */
export interface Telemetry {
  readonly service: string;
  /** The port the operations endpoint listens on, or undefined when it serves nothing. */
  readonly port: number | undefined;
  /** The catalogue's helpers; every service records its metrics through them. */
  readonly metrics: PostroomMetrics;
  /** Creates spans named after the service. */
  readonly tracer: Tracer;
  /** The checks behind /readyz. */
  readonly readiness: Readiness;
  /** Adds a /readyz check (NATS connected, PostgreSQL reachable, caught up ...). */
  addReadinessCheck(name: string, check: ReadinessCheck): void;
  /** Exports the spans ended so far (tests call it before reading an in-memory exporter). */
  flush(): Promise<void>;
  /** Flushes spans, closes the endpoint and unregisters the global providers. */
  stop(): Promise<void>;
}

/** Processes nothing: registers a tracer provider so spans get real ids without exporting them. */
class IdOnlySpanProcessor implements SpanProcessor {
  onStart(): void {}
  onEnd(_span: ReadableSpan): void {}
  async forceFlush(): Promise<void> {}
  async shutdown(): Promise<void> {}
}

function exporterFromEnvironment(env: NodeJS.ProcessEnv): boolean {
  return Boolean(env.OTEL_TRACES_EXPORTER || env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
}

/**
 * Starts traces, metrics and the operations endpoint for one service. Call it once, first thing in
 * main(), before any component creates instruments (the OpenTelemetry metrics API has no proxy: an
 * instrument created before the provider is registered stays a no-op).
 */
export async function startTelemetry(options: TelemetryOptions, env: NodeJS.ProcessEnv = process.env): Promise<Telemetry> {
  // We serve /metrics ourselves, beside /healthz and /readyz, on one port.
  const prometheus = new PrometheusExporter({
    preventServerStart: true,
    withoutScopeInfo: true,
    // Every series gets service_name, so one dashboard query can split RED by service.
    withResourceConstantLabels: /^service\.name$/,
    // target_info would show the process owner, command line, executable path and host name to
    // anyone who can scrape; Prometheus needs none of it (service_name is on every series).
    withoutTargetInfo: true,
  });
  const spanProcessors = options.spanExporter
    ? [new SimpleSpanProcessor(options.spanExporter)]
    : exporterFromEnvironment(env)
      ? undefined
      : [new IdOnlySpanProcessor()];
  const sdk = new NodeSDK({
    serviceName: options.service,
    metricReaders: [prometheus],
    ...(spanProcessors ? { spanProcessors } : {}),
    // Logs stay pino lines on stdout (with trace ids); no OTLP log export unless asked for.
    logRecordProcessors: [],
    textMapPropagator: new W3CTraceContextPropagator(),
    instrumentations: [],
  });
  sdk.start();

  const readiness = new Readiness();
  const postroomMetrics = new PostroomMetrics(metrics.getMeter("@postroom/telemetry"));
  let server: Server | undefined;
  let port: number | undefined;
  if (options.port !== undefined) {
    server = createServer((req, res) => {
      const path = (req.url ?? "/").split("?")[0];
      if (path === "/metrics") {
        prometheus.getMetricsRequestHandler(req, res);
      } else if (path === "/healthz") {
        // Alive means the event loop answers; dependencies belong to /readyz, so a NATS outage
        // makes the pod unready (no traffic) instead of restarted (which would not help).
        res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
      } else if (path === "/readyz") {
        readiness.report().then(
          (report) => res.writeHead(report.ready ? 200 : 503, { "content-type": "application/json" }).end(`${JSON.stringify(report)}\n`),
          () => res.writeHead(503).end(),
        );
      } else {
        res.writeHead(404, { "content-type": "text/plain" }).end("not found: try /metrics, /healthz or /readyz\n");
      }
    });
    await new Promise<void>((resolve, reject) => {
      server!.once("error", reject);
      server!.listen(options.port, options.host ?? DEFAULT_OPERATIONS_HOST, () => {
        server!.off("error", reject);
        resolve();
      });
    }).catch(async (error: unknown) => {
      await sdk.shutdown().catch(() => undefined);
      unregisterGlobals();
      throw new Error(`the operations endpoint cannot listen on port ${options.port}: ${(error as Error).message} (set POSTROOM_HTTP_PORT to a free port)`, { cause: error });
    });
    port = (server.address() as AddressInfo).port;
    options.logger?.info({ host: options.host ?? DEFAULT_OPERATIONS_HOST, port, paths: ["/metrics", "/healthz", "/readyz"] }, "operations endpoint listening");
  }

  return {
    service: options.service,
    port,
    metrics: postroomMetrics,
    tracer: trace.getTracer(options.service),
    readiness,
    addReadinessCheck: (name, check) => readiness.add(name, check),
    async flush() {
      // The registered provider sits behind the API's proxy; only the SDK's has forceFlush.
      const provider = trace.getTracerProvider() as { getDelegate?: () => { forceFlush?: () => Promise<void> } };
      await provider.getDelegate?.().forceFlush?.();
    },
    async stop() {
      // Close the endpoint first (the pod is going away), then flush the spans still in hand.
      await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
      server?.closeAllConnections();
      await sdk.shutdown().catch((error: unknown) => options.logger?.warn({ problem: (error as Error).message }, "telemetry shutdown failed"));
      unregisterGlobals();
    },
  };
}

/** Lets a later `startTelemetry` in the same process (tests) register its own providers. */
function unregisterGlobals(): void {
  trace.disable();
  metrics.disable();
  propagation.disable();
  context.disable();
}

/** Where the operations endpoint listens unless POSTROOM_HTTP_HOST says otherwise. */
export const DEFAULT_OPERATIONS_HOST = "127.0.0.1";

/**
 * The operations endpoint's listen address from the environment: POSTROOM_HTTP_HOST (an IP
 * address or a host name; 0.0.0.0 or :: for every interface, as in a pod), else 127.0.0.1.
 */
export function operationsHost(env: NodeJS.ProcessEnv = process.env): string {
  const raw = env.POSTROOM_HTTP_HOST?.trim();
  if (!raw) return DEFAULT_OPERATIONS_HOST;
  if (!/^[A-Za-z0-9.:_-]+$/.test(raw)) {
    throw new Error(`POSTROOM_HTTP_HOST "${raw}" is not an address: use an IP address or host name such as 127.0.0.1 (this machine only) or 0.0.0.0 (every interface, inside a pod)`);
  }
  return raw;
}

/** The operations port from the environment: POSTROOM_HTTP_PORT, or undefined when unset. */
export function operationsPort(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const raw = env.POSTROOM_HTTP_PORT?.trim();
  if (!raw) return undefined;
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`POSTROOM_HTTP_PORT "${raw}" is not a port: use a number from 0 to 65535 (0 picks a free port), or leave it unset to serve no /metrics`);
  }
  return port;
}
