import { oldestUnansweredSeconds, type AcdStatus } from "@postroom/contracts";
import { ago, type StatusLine } from "./status-table.js";

/** One tenant's ACD as asd-bridge last reported it (undefined: asd-bridge has not reported it). */
export interface AcdRow {
  tenant: string;
  acd: AcdStatus["acd"];
  status: AcdStatus | undefined;
}

export const ACD_COLUMNS = ["TENANT", "ACD", "STATE", "SINCE", "HELD BACK", "UNANSWERED", "OLDEST", "LAST ERROR / FIX"];

/** "45s", "12m", "3h", "2d". */
export function duration(seconds: number): string {
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  if (seconds < 172_800) return `${Math.round(seconds / 3600)}h`;
  return `${Math.round(seconds / 86_400)}d`;
}

/**
 * The verdict and cells for one tenant's ACD, plus one line per problem it reported. Pure. It
 * asks for attention when the ACD is unreachable, when unanswered emails are older than the
 * tenant's alert age, or when a problem (an unknown agent, unacknowledged frames) is reported.
 * A tenant asd-bridge has not reported is shown but asks for nothing: asd-bridge may simply not
 * run here (`postroom up --only ...`).
 */
export function acdStatusLine(row: AcdRow, now: Date): StatusLine & { problems: string[] } {
  const s = row.status;
  if (!s) return { cells: [row.tenant, row.acd, "not reported", "-", "-", "-", "-", "asd-bridge has not reported this tenant: is it running?"], attention: false, problems: [] };
  const oldest = oldestUnansweredSeconds(s, now);
  const overdue = s.unanswered.count > 0 && oldest > s.unanswered.alertAfterSeconds;
  const error = s.lastError && s.state !== "connected" ? `${s.lastError.message}${s.lastError.fix ? ` — fix: ${s.lastError.fix}` : ""}` : "";
  const state = s.state === "unreachable" ? "UNREACHABLE" : s.state;
  return {
    cells: [
      row.tenant,
      s.acd,
      state,
      ago(s.since, now),
      String(s.heldBack),
      overdue ? `${s.unanswered.count} (OVERDUE)` : String(s.unanswered.count),
      s.unanswered.count > 0 ? duration(oldest) : "-",
      error,
    ],
    attention: s.state === "unreachable" || overdue || s.problems.length > 0,
    problems: s.problems.map((p) => `  ${row.tenant}: ${p.kind} ${p.subject} (${p.count}×, last ${ago(p.lastAt, now)}): ${p.detail} — fix: ${p.fix}`),
  };
}
