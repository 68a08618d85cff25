/**
 * Turns the services' pino JSON lines into lines a person can read in a terminal.
 *
 * pino-pretty was considered and rejected: it is a transport meant to run inside the logging
 * process, pulls in a dozen dependencies, and we only need a one-line rendering of a few fields
 * for `postroom up`. Anything that is not a pino JSON object is passed through unchanged.
 */

/** Fields every pino line carries that say nothing new in a terminal. */
const HIDDEN_FIELDS = new Set(["level", "time", "msg", "pid", "hostname", "v", "name"]);
/** How many extra fields a rendered line shows before it says "+N more". */
const MAX_FIELDS = 6;
/** Values longer than this are cut, so a huge object cannot flood the terminal. */
const MAX_VALUE_CHARS = 120;

const LEVELS: Record<number, string> = { 10: "TRACE", 20: "DEBUG", 30: "INFO", 40: "WARN", 50: "ERROR", 60: "FATAL" };

/** ANSI colours; only used when the output is a terminal. */
export const ansi = {
  reset: "\x1b[0m",
  dim: "\x1b[2m",
  bold: "\x1b[1m",
  red: "\x1b[31m",
  green: "\x1b[32m",
  yellow: "\x1b[33m",
  blue: "\x1b[34m",
  magenta: "\x1b[35m",
  cyan: "\x1b[36m",
  gray: "\x1b[90m",
} as const;

/** Colours handed out to services in order, so neighbours differ. */
export const SERVICE_COLOURS = [ansi.cyan, ansi.magenta, ansi.yellow, ansi.blue, ansi.green] as const;

function paint(text: string, colour: string, enabled: boolean): string {
  return enabled ? `${colour}${text}${ansi.reset}` : text;
}

function levelName(level: unknown): string {
  if (typeof level === "number") return LEVELS[level] ?? `L${level}`;
  if (typeof level === "string") return level.toUpperCase();
  return "INFO";
}

function levelColour(name: string): string {
  switch (name) {
    case "TRACE":
    case "DEBUG":
      return ansi.gray;
    case "WARN":
      return ansi.yellow;
    case "ERROR":
    case "FATAL":
      return ansi.red;
    default:
      return ansi.green;
  }
}

/** HH:MM:SS.mmm in local time; pino writes epoch milliseconds by default, ISO strings with isoTime. */
export function formatTime(time: unknown): string {
  const date = typeof time === "number" || typeof time === "string" ? new Date(time) : new Date();
  if (Number.isNaN(date.getTime())) return String(time);
  const pad = (n: number, width = 2) => String(n).padStart(width, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

function formatValue(value: unknown): string {
  let text: string;
  if (typeof value === "string") text = /[\s="]/.test(value) || value === "" ? JSON.stringify(value) : value;
  else text = JSON.stringify(value) ?? String(value);
  return text.length > MAX_VALUE_CHARS ? `${text.slice(0, MAX_VALUE_CHARS - 1)}…` : text;
}

interface PinoError {
  type?: unknown;
  message?: unknown;
  stack?: unknown;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Parses a line as a pino record: a JSON object with a `level` and a `msg` or `time`. */
export function parsePinoLine(line: string): Record<string, unknown> | undefined {
  const trimmed = line.trim();
  if (!trimmed.startsWith("{") || !trimmed.endsWith("}")) return undefined;
  try {
    const parsed: unknown = JSON.parse(trimmed);
    if (isRecord(parsed) && "level" in parsed && ("msg" in parsed || "time" in parsed)) return parsed;
  } catch {
    // Not JSON after all: shown as it is.
  }
  return undefined;
}

/**
 * Renders one line of a service's output. Returns one or more lines without prefix: a pino
 * record becomes `time LEVEL msg key=value …` (plus an indented stack for errors); anything else
 * is returned unchanged. A `service` field equal to `options.service` is left out: the prefix
 * already says it.
 */
export function renderLogLine(line: string, options: { colour: boolean; service?: string }): string[] {
  const record = parsePinoLine(line);
  if (!record) return [line];
  const colour = options.colour;
  const level = levelName(record.level);
  const parts = [
    paint(formatTime(record.time), ansi.dim, colour),
    paint(level.padEnd(5), levelColour(level), colour),
    typeof record.msg === "string" ? record.msg : formatValue(record.msg ?? ""),
  ];
  const extra: string[] = [];
  let stack: string | undefined;
  let hidden = 0;
  for (const [key, value] of Object.entries(record)) {
    if (HIDDEN_FIELDS.has(key) || value === undefined) continue;
    // The prefix already names the service.
    if (key === "service" && value === options.service) continue;
    if ((key === "err" || key === "error") && isRecord(value)) {
      const err = value as PinoError;
      const type = typeof err.type === "string" ? `${err.type}: ` : "";
      extra.push(`${key}=${formatValue(`${type}${String(err.message ?? "")}`)}`);
      if (typeof err.stack === "string" && (typeof record.level !== "number" || record.level >= 50)) stack = err.stack;
      continue;
    }
    if (extra.length >= MAX_FIELDS) {
      hidden++;
      continue;
    }
    extra.push(`${key}=${formatValue(value)}`);
  }
  if (hidden > 0) extra.push(`(+${hidden} more)`);
  const first = [...parts, ...extra.map((e) => paint(e, ansi.dim, colour))].join(" ");
  if (!stack) return [first];
  // The first stack line repeats the message, which is already shown.
  const frames = stack.split("\n").slice(1).map((frame) => paint(`    ${frame.trim()}`, ansi.dim, colour));
  return [first, ...frames];
}

/** Formats the `name │ ` prefix, padded so that every service's lines line up. */
export function formatPrefix(name: string, width: number, colour: string | undefined): string {
  const padded = name.padEnd(width);
  return colour ? `${colour}${padded}${ansi.reset} ${ansi.dim}│${ansi.reset} ` : `${padded} │ `;
}
