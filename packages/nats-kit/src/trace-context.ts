import { context, propagation, type Context } from "@opentelemetry/api";
import type { MsgHdrs } from "@nats-io/transport-node";

/** The W3C trace-context headers that travel with every JetStream message. */
const TRACE_HEADERS = ["traceparent", "tracestate"] as const;

/**
 * The active span's context as NATS headers (`traceparent`, `tracestate`). Empty when telemetry
 * was not started (the API's no-op propagator injects nothing), so publishing never depends on it.
 */
export function traceHeaders(ctx: Context = context.active()): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(ctx, carrier);
  return carrier;
}

/** The trace context a message carries, to continue its trace in the consumer. */
export function traceContextOf(headers: MsgHdrs | undefined, base: Context = context.active()): Context {
  const carrier: Record<string, string> = {};
  for (const name of TRACE_HEADERS) {
    const value = headers?.get(name);
    if (value) carrier[name] = value;
  }
  return propagation.extract(base, carrier);
}
