import { createHash } from "node:crypto";
import type { ArchiveSettings } from "@postroom/config";
import { ingestKey, type DiskAlert, type IngestControl, type Names, type SendRequested } from "@postroom/contracts";
import type { Pool } from "@postroom/db";
import { publishJson, retryTransient, type JetStreamClient, type KV } from "@postroom/nats-kit";
import { errorFields, type Logger } from "@postroom/telemetry";
import { directoryBytes, filesystemSpace } from "./disk.js";
import { formatBytes, GB, nextAlert, percentLeft, roomFor, type AlertKind, type AlertState, type DiskFacts, type Room } from "./disk-policy.js";

/**
 * Disk a message of `rawBytes` may take while it is archived: the .eml, its decoded parts (never
 * larger than the encoded message) and meta.json. What a refused message waits for.
 */
export function stagingEstimate(rawBytes: number): number {
  return 2 * rawBytes + 64 * 1024;
}

/** What a refused message needs before ingestion resumes: its folder within the quota, and its staging on the disk. */
export interface Need {
  quotaBytes: number;
  diskBytes: number;
}

export interface GuardedMailbox {
  tenant: string;
  mailbox: string;
  /** The mailbox has SMTP settings, so alert e-mails can go out through it. */
  canSend: boolean;
}

export interface DiskGuardOptions {
  /** The archive root this guard watches. */
  root: string;
  /** Quota, warning threshold and alert recipients of this archive. */
  settings: ArchiveSettings;
  /** Every mailbox archiving under this root: paused, resumed and alerted together. */
  mailboxes: GuardedMailbox[];
  names: Names;
  js: JetStreamClient;
  /** KV bucket `names.buckets.control`, where imap-poller reads its ingestion pause. */
  control: KV;
  pool: Pool;
  logger: Logger;
  /** Written into the control entry: who paused ingestion. */
  by: string;
  /** Free space always left on the filesystem; overrides `settings.minFreeBytes` (tests). */
  minFreeBytes?: number;
  /** How often free space is re-measured and a pause re-examined (default 15 s). */
  checkIntervalMs?: number;
  /** How often usage is recounted from the disk, correcting drift (default 10 min). */
  rescanIntervalMs?: number;
  /** Reminder interval while an alert stands (default 24 h). */
  reminderMs?: number;
  /** See AlertInput.hysteresisPercent (default 1 point). */
  hysteresisPercent?: number;
  now?: () => Date;
}

/** What the guard last measured; the seam for metrics (usage and free space per archive). */
export interface DiskSnapshot {
  root: string;
  usedBytes: number;
  quotaBytes: number | null;
  fsFreeBytes: number;
  fsTotalBytes: number;
  percentLeft: number;
  level: AlertState["level"];
  paused: boolean;
}

/**
 * Guards one archive root: keeps its usage (counted at start, then updated per archived message
 * and recounted now and then), checks room before each message, pauses ingestion when the next
 * message does not fit and resumes it when it does, and raises disk alerts with hysteresis and a
 * daily reminder — as `alert.disk` events and, when enabled, an e-mail through smtp-sender.
 */
export class DiskGuard {
  #o: DiskGuardOptions;
  readonly #log: Logger;
  #used = 0;
  /** Bytes of staged folders that fit and are about to be committed. */
  #reserved = 0;
  /** Their target folders. */
  readonly #pending = new Set<string>();
  /** Folders committed while a rescan walks the disk. */
  #scanLog: Map<string, number> | undefined;
  #fs = { freeBytes: 0, totalBytes: 0 };
  #state: AlertState = { level: "ok", alertedAt: null };
  /** What the message that did not fit needed; null while ingestion runs. */
  #blockedNeed: Need | null = null;
  #blockedReason = "";
  #pausedWritten: boolean | undefined;
  #lastScan = 0;
  #timer: NodeJS.Timeout | undefined;
  #checking: Promise<void> | undefined;
  /** Serialises evaluations so two messages finishing at once cannot raise one alert twice. */
  #evaluating: Promise<void> = Promise.resolve();

  constructor(options: DiskGuardOptions) {
    this.#o = options;
    this.#log = options.logger.child({ component: "disk-guard", archive: options.root });
  }

  get root(): string {
    return this.#o.root;
  }

  async start(): Promise<void> {
    await this.#o.pool.query("INSERT INTO archive_disk_state (archive_path) VALUES ($1) ON CONFLICT (archive_path) DO NOTHING", [this.#o.root]);
    await this.#loadState();
    await this.#rescan();
    await this.#refreshFs();
    // A pause left by an earlier run is re-decided now: the next message will tell if it still holds.
    await this.#writeControl(false);
    await this.#evaluate();
    const every = this.#o.checkIntervalMs ?? 15_000;
    this.#timer = setInterval(() => {
      this.#checking ??= this.check()
        .catch((error: unknown) => this.#log.warn(errorFields(error), "disk check failed"))
        .finally(() => (this.#checking = undefined));
    }, every);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#checking;
    await this.#evaluating;
  }

  snapshot(): DiskSnapshot {
    const facts = this.#facts();
    return {
      root: this.#o.root,
      usedBytes: facts.usedBytes,
      quotaBytes: facts.quotaBytes,
      fsFreeBytes: facts.fsFreeBytes,
      fsTotalBytes: facts.fsTotalBytes,
      percentLeft: percentLeft(facts),
      level: this.#state.level,
      paused: this.#blockedNeed !== null,
    };
  }

  /** Before staging: is there room for a message of `rawBytes` (its .eml, and as much again for its parts)? */
  async admit(rawBytes: number): Promise<Room> {
    await this.#refreshFs();
    const facts = this.#facts();
    // The quota is checked exactly after staging (see fits); here only what the .eml alone needs.
    const quota = roomFor({ ...facts, fsFreeBytes: Number.MAX_SAFE_INTEGER }, rawBytes, 0);
    if (!quota.ok) return quota;
    const room = roomFor({ ...facts, quotaBytes: null }, stagingEstimate(rawBytes), this.#minFree());
    // The message that was refused (or one at least as large) fits now: the pause ends here. Left
    // to the next check, the pause could outlive its cause — once this message is archived the
    // space it took may leave too little for the need the pause remembers, and it would never end.
    if (room.ok && this.#blockedNeed !== null && rawBytes >= this.#blockedNeed.quotaBytes) {
      this.#log.info({ usedBytes: this.#used, fsFreeBytes: this.#fs.freeBytes }, "archive has room again; ingestion resumes");
      this.#blockedNeed = null;
      await this.#writeControl(false);
      await this.#evaluate();
    }
    return room;
  }

  /**
   * After staging: does the staged folder of `bytes` fit the quota, counting the folders other
   * messages in hand have reserved? When it does, the bytes stay reserved until `committed` or
   * `unreserve`, so messages archived side by side cannot together overrun the quota.
   */
  reserve(bytes: number, folder: string): Room {
    const room = roomFor({ ...this.#facts(), usedBytes: this.#used + this.#reserved, fsFreeBytes: Number.MAX_SAFE_INTEGER }, bytes, 0);
    if (room.ok) {
      this.#reserved += bytes;
      this.#pending.add(folder);
    }
    return room;
  }

  /** Gives back a reservation whose folder was not added (a failed commit, or a duplicate). */
  unreserve(bytes: number, folder: string): void {
    this.#reserved = Math.max(0, this.#reserved - bytes);
    this.#pending.delete(folder);
  }

  /**
   * The next message (needing `bytes`) cannot be archived: pause ingestion for every mailbox of
   * this archive and raise the critical alert. The caller leaves the message unacknowledged.
   */
  async block(reason: string, need: Need): Promise<void> {
    const first = this.#blockedNeed === null;
    const prev = this.#blockedNeed ?? { quotaBytes: 0, diskBytes: 0 };
    this.#blockedNeed = { quotaBytes: Math.max(need.quotaBytes, prev.quotaBytes), diskBytes: Math.max(need.diskBytes, prev.diskBytes) };
    this.#blockedReason = reason;
    if (first) this.#log.error({ reason, needBytes: need.quotaBytes, usedBytes: this.#used }, "archive full; ingestion paused");
    await this.#writeControl(true);
    await this.#evaluate();
  }

  /** A message folder of `bytes`, reserved before, was committed. */
  async committed(bytes: number, folder: string): Promise<void> {
    this.unreserve(bytes, folder);
    this.#used += bytes;
    this.#scanLog?.set(folder, bytes);
    await this.#evaluate();
  }

  /** Files of `bytes` were removed (retention). */
  async released(bytes: number): Promise<void> {
    this.#used = Math.max(0, this.#used - bytes);
    await this.check();
  }

  /** Re-measures, resumes ingestion when the blocked message now fits, and raises due alerts. */
  async check(): Promise<void> {
    if (Date.now() - this.#lastScan >= (this.#o.rescanIntervalMs ?? 10 * 60_000)) await this.#rescan();
    await this.#refreshFs();
    if (this.#blockedNeed !== null) {
      const facts = this.#facts();
      const quota = roomFor({ ...facts, fsFreeBytes: Number.MAX_SAFE_INTEGER }, this.#blockedNeed.quotaBytes, 0);
      const disk = roomFor({ ...facts, quotaBytes: null }, this.#blockedNeed.diskBytes, this.#minFree());
      if (quota.ok && disk.ok) {
        this.#log.info({ usedBytes: this.#used, fsFreeBytes: this.#fs.freeBytes }, "archive has room again; ingestion resumes");
        this.#blockedNeed = null;
        await this.#writeControl(false);
      }
    } else if (this.#pausedWritten !== false) {
      await this.#writeControl(false);
    }
    await this.#evaluate();
  }

  /**
   * New quota, threshold, reserve or recipients (a config reload on SIGHUP): they apply from the
   * next message, and a pause the new settings lift ends now, without restarting anything.
   * The root stays: a guard is one folder.
   */
  async updateSettings(settings: ArchiveSettings): Promise<void> {
    this.#o = { ...this.#o, settings };
    this.#log.info({ quotaGb: settings.quotaGb ?? null, warnPercentLeft: settings.warnPercentLeft, minFreeBytes: this.#minFree() }, "archive settings reloaded");
    await this.check();
  }

  #minFree(): number {
    return this.#o.minFreeBytes ?? this.#o.settings.minFreeBytes ?? 512 * 1024 * 1024;
  }

  #facts(): DiskFacts {
    return {
      usedBytes: this.#used,
      quotaBytes: this.#o.settings.quotaGb === undefined ? null : Math.floor(this.#o.settings.quotaGb * GB),
      fsFreeBytes: this.#fs.freeBytes,
      fsTotalBytes: this.#fs.totalBytes,
    };
  }

  /**
   * Recounts usage from the disk while messages keep being archived. A folder renamed into place
   * but not yet `committed` is skipped (its bytes arrive with `committed`); a folder committed
   * during the walk that the walk did not enter is added from the log. Without this, a folder
   * could be counted twice (walk, then `committed`) and the archive refuse mail it has room for.
   */
  async #rescan(): Promise<void> {
    const log = new Map<string, number>();
    this.#scanLog = log;
    const entered = new Set<string>();
    try {
      const scanned = await directoryBytes(this.#o.root, { skip: (dir) => this.#pending.has(dir), entered });
      let missed = 0;
      for (const [folder, bytes] of log) if (!entered.has(folder)) missed += bytes;
      this.#used = scanned + missed;
      this.#lastScan = Date.now();
    } finally {
      this.#scanLog = undefined;
    }
  }

  async #refreshFs(): Promise<void> {
    this.#fs = await filesystemSpace(this.#o.root);
  }

  async #loadState(): Promise<void> {
    const r = await this.#o.pool.query<{ level: AlertState["level"]; alerted_at: Date | null }>(
      "SELECT level, alerted_at FROM archive_disk_state WHERE archive_path = $1",
      [this.#o.root],
    );
    const row = r.rows[0];
    if (row) this.#state = { level: row.level, alertedAt: row.alerted_at };
  }

  /** Writes the pause (or its end) for every mailbox of this archive, when it changed. */
  async #writeControl(paused: boolean): Promise<void> {
    if (this.#pausedWritten === paused) return;
    const entry: IngestControl = {
      version: "v1",
      paused,
      reason: paused ? this.#blockedReason : null,
      by: this.#o.by,
      updatedAt: (this.#o.now?.() ?? new Date()).toISOString(),
    };
    // Retried while JetStream is between leaders: the full chaos profile's archiver exited at start
    // on "no responders" for this put while a NATS node restarted.
    for (const m of this.#o.mailboxes) await retryTransient(() => this.#o.control.put(ingestKey(m.tenant, m.mailbox), JSON.stringify(entry)));
    this.#pausedWritten = paused;
  }

  #evaluate(): Promise<void> {
    const run = this.#evaluating.then(() => this.#evaluateNow()).catch((error: unknown) => this.#log.warn(errorFields(error), "disk alert not raised yet"));
    this.#evaluating = run;
    return run;
  }

  async #evaluateNow(): Promise<void> {
    const facts = this.#facts();
    const pct = percentLeft(facts);
    const now = this.#o.now?.() ?? new Date();
    const next = nextAlert(this.#state, {
      percentLeft: pct,
      full: this.#blockedNeed !== null,
      warnPercentLeft: this.#o.settings.warnPercentLeft,
      hysteresisPercent: this.#o.hysteresisPercent ?? 1,
      reminderMs: this.#o.reminderMs ?? 24 * 3600_000,
      now,
    });
    if (next.state.level === this.#state.level && next.state.alertedAt?.getTime() === this.#state.alertedAt?.getTime()) return;
    // Compare-and-set: with several replicas only the one that moves the stored state raises the alert.
    const r = await this.#o.pool.query(
      `UPDATE archive_disk_state SET level = $2, alerted_at = $3, updated_at = now()
       WHERE archive_path = $1 AND level = $4 AND alerted_at IS NOT DISTINCT FROM $5`,
      [this.#o.root, next.state.level, next.state.alertedAt, this.#state.level, this.#state.alertedAt],
    );
    if (r.rowCount !== 1) {
      await this.#loadState();
      return;
    }
    const previous = this.#state;
    this.#state = next.state;
    if (next.alert) await this.#raise(next.alert, facts, pct, now, previous);
  }

  async #raise(kind: AlertKind, facts: DiskFacts, pct: number, at: Date, previous: AlertState): Promise<void> {
    const { names, js, settings, root } = this.#o;
    const alertId = `disk-${createHash("sha256").update(root).digest("hex").slice(0, 16)}-${kind}-${at.getTime()}`;
    this.#log[kind === "cleared" ? "info" : "warn"](
      { level: kind, previous: previous.level, usedBytes: facts.usedBytes, quotaBytes: facts.quotaBytes, fsFreeBytes: facts.fsFreeBytes, percentLeft: round(pct) },
      "disk alert",
    );
    for (const m of this.#o.mailboxes) {
      const event: DiskAlert = {
        version: "v1",
        tenant: m.tenant,
        mailbox: m.mailbox,
        level: kind,
        archivePath: root,
        usedBytes: facts.usedBytes,
        quotaBytes: facts.quotaBytes ?? 0,
        filesystemFreeBytes: facts.fsFreeBytes,
        percentLeft: round(pct),
        raisedAt: at.toISOString(),
      };
      await publishJson(js, names.subjects.diskAlert(m.tenant, m.mailbox), event, { msgId: `${alertId}.${m.tenant}.${m.mailbox}` });
    }
    if (kind === "cleared" || !settings.sendAlerts || settings.alertRecipients.length === 0) return;
    const sender = this.#o.mailboxes.find((m) => m.canSend);
    if (!sender) {
      this.#log.warn({ level: kind }, "alert e-mail not sent: no mailbox of this archive has smtp settings");
      return;
    }
    const command: SendRequested = {
      version: "v1",
      commandId: alertId,
      tenant: sender.tenant,
      mailbox: sender.mailbox,
      kind: "alert",
      to: settings.alertRecipients,
      cc: [],
      bcc: [],
      subject: alertSubject(kind, previous, pct, this.#blockedNeed !== null),
      text: alertText(kind, root, facts, pct, this.#blockedReason, this.#blockedNeed !== null, this.#o.mailboxes),
      requestedAt: at.toISOString(),
    };
    await publishJson(js, names.subjects.mailSend(sender.tenant, sender.mailbox), command, { msgId: alertId });
  }
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

function alertSubject(kind: AlertKind, previous: AlertState, pct: number, full: boolean): string {
  const what = kind === "reminder" ? `${previous.level === "critical" || full ? "critical" : "warning"} reminder` : kind;
  return full ? `Postroom archive ${what}: archive full, ingestion paused` : `Postroom archive ${what}: ${pct.toFixed(1)}% of the disk allowance left`;
}

function alertText(kind: AlertKind, root: string, f: DiskFacts, pct: number, reason: string, full: boolean, mailboxes: GuardedMailbox[]): string {
  return [
    `Archive: ${root}`,
    `Mailboxes: ${mailboxes.map((m) => `${m.tenant}/${m.mailbox}`).join(", ")}`,
    `Used: ${formatBytes(f.usedBytes)}${f.quotaBytes === null ? "" : ` of a ${formatBytes(f.quotaBytes)} quota`}`,
    `Filesystem free: ${formatBytes(f.fsFreeBytes)} of ${formatBytes(f.fsTotalBytes)}`,
    `Left: ${pct.toFixed(1)}%`,
    "",
    full
      ? `Ingestion is paused: ${reason}. New mail stays on the mail server and nothing is lost. Free space or raise the archive quota; ingestion resumes by itself.`
      : kind === "reminder"
        ? "This alert still stands. Free space or raise the archive quota before the archive is full."
        : "When the archive is full, ingestion pauses and new mail stays on the mail server until there is room.",
    "",
    "Sent automatically by Postroom's archiver.",
  ].join("\n");
}
