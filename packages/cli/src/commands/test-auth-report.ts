// The results of `postroom test-auth` and how they are printed: one verdict line per step, the
// catalogue's meaning and fix under a failure, and the same as JSON for scripts.

/** The catalogue's explanation of a failure. */
export interface Explanation {
  /** The provider's code or the server's reply (`AADSTS7000215`, `IMAP NO AUTHENTICATE failed.`). */
  code: string;
  meaning: string;
  /** The fix, ready to paste (PowerShell lines filled with the app id, object id and mailbox). */
  fix: string;
}

/** One checked step. */
export interface StepResult {
  /** dns, tcp, tls, clock, config, token, claims, imap, pop3, smtp, send. */
  step: string;
  /** pass; warn (passed, with a remark); fail; skip (not run because an earlier step failed). */
  verdict: "pass" | "warn" | "fail" | "skip";
  /** One line: what was checked and what was found. */
  summary: string;
  /** Extra lines shown under the verdict (the decoded claims). */
  details?: string[];
  /** For failures (and some warnings): what it means and what to do. */
  explanation?: Explanation;
}

/** The whole run. */
export interface TestAuthReport {
  mailbox: string;
  ok: boolean;
  steps: StepResult[];
}

const MARK: Record<StepResult["verdict"], string> = { pass: "PASS", warn: "WARN", fail: "FAIL", skip: "SKIP" };

/** True when every step passed (warnings pass; a skipped step was requested and did not run). */
export function allPassed(steps: StepResult[]): boolean {
  return steps.every((s) => s.verdict === "pass" || s.verdict === "warn");
}

/** The human-readable report. */
export function formatReport(report: TestAuthReport): string {
  const lines: string[] = [`postroom test-auth: ${report.mailbox}`, ""];
  for (const s of report.steps) {
    lines.push(`[${MARK[s.verdict]}] ${s.step.padEnd(7)} ${s.summary}`);
    for (const d of s.details ?? []) lines.push(`               ${d}`);
    if (s.explanation) {
      lines.push(`        code:    ${s.explanation.code}`);
      lines.push(`        meaning: ${s.explanation.meaning}`);
      const [first, ...rest] = s.explanation.fix.split("\n");
      lines.push(`        fix:     ${first ?? ""}`);
      for (const r of rest) lines.push(`                 ${r}`);
    }
  }
  const failed = report.steps.filter((s) => s.verdict === "fail" || s.verdict === "skip").length;
  lines.push("", report.ok ? `result: PASS — all ${report.steps.length} checks passed` : `result: FAIL — ${failed} of ${report.steps.length} checks failed or could not run`);
  return `${lines.join("\n")}\n`;
}
