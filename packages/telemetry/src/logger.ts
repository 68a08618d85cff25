import { pino, type Logger } from "pino";
import { activeTraceIds } from "./trace.js";

export type { Logger };

/**
 * Field names whose values are secrets wherever they appear in a log line. pino replaces them
 * before serialising, so a secret passed by mistake in a log object never reaches the output.
 */
export const REDACTED_PATHS = [
  "password",
  "*.password",
  "*.*.password",
  "pass",
  "*.pass",
  "accessToken",
  "*.accessToken",
  "clientSecret",
  "*.clientSecret",
  "*.*.clientSecret",
  "privateKey",
  "*.privateKey",
  "secret",
  "*.secret",
  "token",
  "*.token",
  "authorization",
  "*.authorization",
  "headers.authorization",
];

export interface LoggerOptions {
  service: string;
  level?: string;
  /** Where to write; defaults to stdout. Tests pass a stream to capture lines. */
  destination?: NodeJS.WritableStream;
}

/** The root logger of a service: JSON lines with the service name, secrets redacted. */
export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      name: options.service,
      level: options.level ?? process.env.LOG_LEVEL ?? "info",
      base: { service: options.service, pid: process.pid },
      redact: { paths: REDACTED_PATHS, censor: "[redacted]" },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      // A line written inside a span carries its ids, so logs and traces join up in Grafana.
      mixin: () => activeTraceIds() ?? {},
    },
    (options.destination as pino.DestinationStream | undefined) ?? pino.destination({ sync: false }),
  );
}

/** Serialises an error for a log line without its stack's noise but with its cause chain. */
export function errorFields(error: unknown): Record<string, unknown> {
  if (!(error instanceof Error)) return { error: String(error) };
  const out: Record<string, unknown> = { error: error.message, errorName: error.name };
  const code = (error as { code?: unknown }).code;
  if (code !== undefined) out.errorCode = code;
  if (error.cause !== undefined) out.cause = error.cause instanceof Error ? error.cause.message : String(error.cause);
  return out;
}
