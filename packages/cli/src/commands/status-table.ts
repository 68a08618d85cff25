import { isStalled, type MailboxStatus } from "@postroom/contracts";

/** One configured mailbox and what its poller last reported (undefined: never reported). */
export interface StatusRow {
  tenant: string;
  mailbox: string;
  protocol: "imap" | "pop3" | "graph";
  checkIntervalSeconds: number;
  status: MailboxStatus | undefined;
}

/** A row as printed, with the verdict the exit code is decided on. */
export interface StatusLine {
  cells: string[];
  /** Stalled, never reported, or needs an administrator. */
  attention: boolean;
}

export const STATUS_COLUMNS = ["TENANT", "MAILBOX", "PROTO", "STATE", "OWNER", "LAST CHECK", "LAST MESSAGE", "BACKLOG", "LAST ERROR / FIX"];

/** "12s ago", "5m ago", "3h ago", "2d ago", or "never". */
export function ago(iso: string | null | undefined, now: Date): string {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((now.getTime() - Date.parse(iso)) / 1000));
  if (s < 120) return `${s}s ago`;
  if (s < 7200) return `${Math.round(s / 60)}m ago`;
  if (s < 172_800) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86_400)}d ago`;
}

/**
 * The verdict and cells for one mailbox. Pure. A mailbox with no report yet, or whose last
 * completed check is older than three intervals (while it should be checking), is "stalled" —
 * whatever state its last report claimed, since a dead poller cannot say it died.
 */
export function statusLine(row: StatusRow, now: Date): StatusLine {
  const s = row.status;
  if (!s) {
    return { cells: [row.tenant, row.mailbox, row.protocol, "STALLED (never reported)", "-", "never", "never", "-", "no poller has reported this mailbox: is imap-poller running for this tenant?"], attention: true };
  }
  const stalled = isStalled(s, s.checkIntervalSeconds ?? row.checkIntervalSeconds, now);
  const state = stalled ? `STALLED (${s.state})` : s.state;
  const error = s.lastError && !errorCleared(s) ? `${s.lastError.message}${s.lastError.fix ? ` — fix: ${s.lastError.fix}` : ""}` : "";
  return {
    cells: [row.tenant, row.mailbox, s.protocol ?? row.protocol, state, s.owner ?? "-", ago(s.lastCheckAt, now), ago(s.lastMessageAt, now), String(s.backlog), error],
    attention: stalled || s.state === "needs-admin",
  };
}

/**
 * True when the mailbox's last error is history: a check completed after it and the mailbox is
 * not backing off or waiting for an administrator. The poller keeps `lastError` in the entry (its
 * time and words are useful in --json), but the table showed it for ever, so a fixed mailbox still
 * looked broken.
 */
export function errorCleared(s: MailboxStatus): boolean {
  if (!s.lastError) return true;
  if (s.state === "backing-off" || s.state === "needs-admin") return false;
  return s.lastCheckAt !== null && Date.parse(s.lastCheckAt) > Date.parse(s.lastError.at);
}

/** Left-aligned columns, two spaces apart; the last column is not padded. */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n") + "\n";
}
