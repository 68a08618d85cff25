import { context, propagation, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Span } from "@opentelemetry/api";

/**
 * Runs `fn` inside a new span (child of the active one), ending it when `fn` settles and marking
 * it failed when `fn` throws. Services use it at the points a trace should show: a fetch, a send.
 */
export async function withSpan<T>(
  name: string,
  fn: (span: Span) => Promise<T>,
  options: { attributes?: Attributes; kind?: SpanKind; parent?: Context; tracer?: string } = {},
): Promise<T> {
  const tracer = trace.getTracer(options.tracer ?? "@postroom/telemetry");
  return tracer.startActiveSpan(name, { kind: options.kind ?? SpanKind.INTERNAL, ...(options.attributes ? { attributes: options.attributes } : {}) }, options.parent ?? context.active(), async (span) => {
    try {
      return await fn(span);
    } catch (error) {
      span.recordException(error as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error)?.message ?? String(error) });
      throw error;
    } finally {
      span.end();
    }
  });
}

/** The W3C trace context of the active span as headers (`traceparent`, maybe `tracestate`). */
export function traceHeaders(ctx: Context = context.active()): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(ctx, carrier);
  return carrier;
}

/** The context carried by headers (`traceparent`), for a consumer to continue the trace. */
export function contextFromHeaders(headers: Record<string, string | undefined>): Context {
  return propagation.extract(context.active(), headers);
}

/** The active span's ids, or undefined outside a span (used by the logger's mixin). */
export function activeTraceIds(): { trace_id: string; span_id: string } | undefined {
  const span = trace.getActiveSpan();
  if (!span) return undefined;
  const c = span.spanContext();
  if (!trace.isSpanContextValid(c)) return undefined;
  return { trace_id: c.traceId, span_id: c.spanId };
}
