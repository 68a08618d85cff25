/** How bad a problem is: an error stops the configuration from loading, a warning does not. */
export type IssueSeverity = "error" | "warning";

/** One problem in a configuration: where, what, and how to fix it. */
export interface ConfigIssue {
  /** Dotted path to the field, e.g. `tenants[0].mailboxes[1].inbound.port`; empty for the whole file. */
  path: string;
  /** What is wrong, in the operator's words. Never contains a secret value. */
  message: string;
  /** How to fix it, when there is something specific to say. */
  fix: string | null;
  /** Absent means "error": issues built before severities existed are errors. */
  severity?: IssueSeverity;
  /** 1-based line in the YAML file where the field (or its nearest existing parent) is, when known. */
  line?: number;
}

/** A configuration that cannot be used. Lists every problem found, not only the first. */
export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(
    /** Where the configuration came from: a file path, "environment", or a caller's label. */
    readonly source: string,
    /** Every error found (never warnings), in file order where known. */
    readonly issues: ConfigIssue[],
    options?: { cause?: unknown },
  ) {
    super(`${source}: ${issues.length} problem(s)\n${issues.map((i) => `  - ${formatIssue(i)}`).join("\n")}`, options);
  }
}

/** One line: `path (line N): message — fix: …`. */
export function formatIssue(issue: ConfigIssue): string {
  const where = `${issue.path || "(top level)"}${issue.line !== undefined ? ` (line ${issue.line})` : ""}`;
  return `${where}: ${issue.message}${issue.fix ? ` — fix: ${issue.fix}` : ""}`;
}

/** `["tenants", 0, "id"]` → `tenants[0].id`. */
export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = "";
  for (const p of path) {
    if (typeof p === "number") out += `[${p}]`;
    else out += out === "" ? String(p) : `.${String(p)}`;
  }
  return out;
}
