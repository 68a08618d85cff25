import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { formatIssue, redactConfig, validateConfig, type ConfigIssue } from "@postroom/config";
import { stringify } from "yaml";
import { EXIT_USAGE } from "../dispatch.js";

export const help = `Usage: postroom config check FILE [--quiet]

Validates a Postroom configuration file. When it is valid, prints the configuration as the services
will see it (defaults filled in, secrets shown as their env:/file: reference or ***), then any
warnings, and exits 0. Otherwise prints every error with its path, line and fix, and exits 1.

Options:
  -q, --quiet   print only warnings and errors, not the configuration
  -h, --help    show this help
`;

/** Prints one issue as three lines: where, what, fix. */
export function formatIssueBlock(issue: ConfigIssue): string {
  const mark = issue.severity === "warning" ? "warning" : "error";
  const where = `${issue.path || "(top level)"}${issue.line !== undefined ? ` (line ${issue.line})` : ""}`;
  return `  ${mark}: ${where}\n    problem: ${issue.message}\n${issue.fix ? `    fix:     ${issue.fix}\n` : ""}`;
}

export async function run(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: { quiet: { type: "boolean", short: "q" }, help: { type: "boolean", short: "h" } } });
  } catch (e) {
    process.stderr.write(`postroom config check: ${(e as Error).message}\n\n${help}`);
    return EXIT_USAGE;
  }
  if (parsed.values.help) {
    process.stdout.write(help);
    return 0;
  }
  const [file, ...extra] = parsed.positionals;
  if (file === undefined || extra.length > 0) {
    process.stderr.write(`postroom config check: give exactly one config file\n\n${help}`);
    return EXIT_USAGE;
  }

  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    process.stderr.write(`postroom config check: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}\n`);
    return 1;
  }

  const { config, errors, warnings } = validateConfig(text);
  if (!config) {
    process.stderr.write(`${file}: ${errors.length} error${errors.length === 1 ? "" : "s"}\n`);
    for (const issue of errors) process.stderr.write(formatIssueBlock(issue));
    if (warnings.length > 0) {
      process.stderr.write(`\n${warnings.length} warning${warnings.length === 1 ? "" : "s"}\n`);
      for (const issue of warnings) process.stderr.write(formatIssueBlock(issue));
    }
    return 1;
  }

  if (!parsed.values.quiet) process.stdout.write(stringify(redactConfig(config), { lineWidth: 0 }));
  // Warnings go to stderr so that stdout stays a valid YAML document.
  if (warnings.length > 0) {
    process.stderr.write(`\n${file}: valid, with ${warnings.length} warning${warnings.length === 1 ? "" : "s"}\n`);
    for (const issue of warnings) process.stderr.write(formatIssueBlock(issue));
  } else {
    process.stderr.write(`${file}: valid\n`);
  }
  return 0;
}

// Kept for callers that prefer the one-line form (logs).
export { formatIssue };
