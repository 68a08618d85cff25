/**
 * The disk decisions, as pure functions over measured facts: can the archive take the next
 * message, and which alert (if any) does this measurement raise. The DiskGuard measures and acts.
 */

/** The quota's unit: Softdial's EmailDiskSpace is in GB; we read it as GiB (2^30 bytes), as `df -h` shows. */
export const GB = 1024 ** 3;

export interface DiskFacts {
  /** Bytes under the archive root (staging excluded). */
  usedBytes: number;
  /** The archive's quota; null when none is configured (then only the filesystem limits it). */
  quotaBytes: number | null;
  /** Free bytes on the archive's filesystem, as an unprivileged writer sees them. */
  fsFreeBytes: number;
  fsTotalBytes: number;
}

/**
 * Percentage of the allowance left. With a quota: what is left of it, but never more than the
 * filesystem can still hold (a quota of 100 GB on a disk with 5 GB free has at most 5 GB left).
 * Without a quota: the filesystem's free percentage.
 */
export function percentLeft(f: DiskFacts): number {
  if (f.quotaBytes !== null) {
    if (f.quotaBytes <= 0) return 0;
    const left = Math.max(0, Math.min(f.quotaBytes - f.usedBytes, f.fsFreeBytes));
    return (left / f.quotaBytes) * 100;
  }
  return f.fsTotalBytes > 0 ? (f.fsFreeBytes / f.fsTotalBytes) * 100 : 0;
}

export type Room = { ok: true } | { ok: false; reason: string };

/**
 * Whether `bytes` more fit: within the quota, and leaving `minFreeBytes` free on the filesystem
 * (other writers — PostgreSQL, logs — may share it, and a full filesystem breaks more than us).
 */
export function roomFor(f: DiskFacts, bytes: number, minFreeBytes: number): Room {
  if (f.quotaBytes !== null && f.usedBytes + bytes > f.quotaBytes) {
    return {
      ok: false,
      reason: `archive quota of ${formatBytes(f.quotaBytes)} reached: ${formatBytes(f.usedBytes)} used, the next message needs ${formatBytes(bytes)}`,
    };
  }
  if (f.fsFreeBytes - bytes < minFreeBytes) {
    return {
      ok: false,
      reason: `archive filesystem almost full: ${formatBytes(f.fsFreeBytes)} free, ${formatBytes(minFreeBytes)} kept in reserve, the next message needs ${formatBytes(bytes)}`,
    };
  }
  return { ok: true };
}

export type AlertLevel = "ok" | "warning" | "critical";
export type AlertKind = "warning" | "critical" | "cleared" | "reminder";

export interface AlertState {
  level: AlertLevel;
  /** When the last alert or reminder was raised; drives the daily reminder. */
  alertedAt: Date | null;
}

export interface AlertInput {
  percentLeft: number;
  /** The archive could not take the last message offered to it (ingestion is paused). */
  full: boolean;
  warnPercentLeft: number;
  /**
   * Percentage points above the warning threshold that usage must get back to before the
   * warning is cleared (and can be raised again): without it, an archive hovering at the
   * threshold would alert on every message.
   */
  hysteresisPercent: number;
  reminderMs: number;
  now: Date;
}

/**
 * The alert state machine: one warning when the threshold is crossed, one critical alert when the
 * archive is full, a reminder each `reminderMs` while either lasts, "cleared" once usage is back
 * below the threshold (by the hysteresis margin). Never two alerts for one crossing.
 */
export function nextAlert(state: AlertState, input: AlertInput): { state: AlertState; alert: AlertKind | null } {
  const { now } = input;
  const low = input.percentLeft <= input.warnPercentLeft;
  const recovered = input.percentLeft > input.warnPercentLeft + input.hysteresisPercent;
  const reminderDue = state.alertedAt !== null && now.getTime() - state.alertedAt.getTime() >= input.reminderMs;
  if (input.full) {
    if (state.level !== "critical") return { state: { level: "critical", alertedAt: now }, alert: "critical" };
    return reminderDue ? { state: { level: "critical", alertedAt: now }, alert: "reminder" } : { state, alert: null };
  }
  switch (state.level) {
    case "critical":
      // Room again: ingestion resumes. Still above the threshold means the warning stands.
      if (recovered) return { state: { level: "ok", alertedAt: state.alertedAt }, alert: "cleared" };
      return { state: { level: "warning", alertedAt: state.alertedAt }, alert: null };
    case "warning":
      if (recovered) return { state: { level: "ok", alertedAt: state.alertedAt }, alert: "cleared" };
      return reminderDue ? { state: { level: "warning", alertedAt: now }, alert: "reminder" } : { state, alert: null };
    case "ok":
      return low ? { state: { level: "warning", alertedAt: now }, alert: "warning" } : { state, alert: null };
  }
}

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}
