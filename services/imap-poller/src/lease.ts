import { ReplicaHeartbeat, leaseKey, replicaKey, replicaKeys, type MailboxLease } from "@postroom/contracts";
import { liveKeys, type KV } from "@postroom/nats-kit";
import type { Logger } from "@postroom/telemetry";

/** A mailbox this replica may poll. */
export interface LeaseTarget {
  tenant: string;
  mailbox: string;
}

/** Timing of leases. The bucket's TTL must equal `ttlMs`: an unrenewed lease then disappears by itself. */
export interface LeaseTiming {
  /** Lifetime of a lease entry without renewal (the leases bucket's TTL). */
  ttlMs: number;
  /** How often leases and the heartbeat are renewed and free mailboxes looked for. */
  renewEveryMs: number;
  /**
   * A replica stops polling a mailbox this long before its lease could have expired at the
   * server, so the next owner (who can only take it after expiry) never overlaps with it.
   */
  fenceMarginMs: number;
}

/**
 * Ten-second leases renewed every two seconds. Takeover bound: a replica that dies renewed last at
 * t0; its leases expire at t0 + 10 s; the others look every 2 s, so a mailbox has a new owner by
 * t0 + 12 s and is connected and checked about a second later — under 15 s. The owner fences
 * itself at t0 + 7 s when it cannot renew (NATS unreachable), 3 s before anyone else may take over.
 */
export const DEFAULT_LEASE_TIMING: LeaseTiming = { ttlMs: 10_000, renewEveryMs: 2_000, fenceMarginMs: 3_000 };

/** New leases taken per round at most (see the acquire loop). */
export const MAX_ACQUIRE_PER_ROUND = 100;

export interface LeaseManagerOptions {
  /** The leases bucket, opened with a TTL of `timing.ttlMs`. */
  kv: KV;
  /** This replica's id: a KV-safe token, unique per process (a restarted process is a new replica). */
  replica: string;
  /** The tenants this replica is restricted to, or null for all (reported in the heartbeat). */
  tenants: string[] | null;
  /** Every mailbox this replica may poll (already restricted to its tenants). */
  targets: LeaseTarget[];
  timing?: LeaseTiming;
  /** Start polling: the lease is ours. */
  onAcquired: (target: LeaseTarget) => Promise<void>;
  /**
   * Stop polling at once: the lease is gone or about to be (hard stop, no goodbye to the server
   * needed). Must not wait on the network for long.
   */
  onLost: (target: LeaseTarget, reason: string) => Promise<void>;
  /** Stop polling in an orderly way before the lease is handed to another replica. */
  onReleasing: (target: LeaseTarget) => Promise<void>;
  logger: Logger;
  now?: () => number;
}

interface Held {
  target: LeaseTarget;
  revision: number;
  since: string;
  /** Local time the last successful renewal was sent: the server's expiry is at least ttl after it. */
  renewedSentAt: number;
}

/**
 * What a replica should do with leases in one round. Pure, so spreading is unit-tested.
 *
 * Every live replica that may serve these mailboxes takes at most its fair share (rounded up);
 * a replica above its share releases the surplus so a newcomer gets some. Among free mailboxes
 * each replica prefers its own pseudo-random order (rendezvous hashing), so replicas starting at
 * once rarely race for the same mailbox.
 */
export function planLeases(input: {
  replica: string;
  targets: string[];
  owned: string[];
  /** Lease keys currently held by anyone (including us). */
  taken: Set<string>;
  /** Live replicas able to serve these targets, including this one. */
  replicas: number;
}): { acquire: string[]; release: string[] } {
  const share = Math.ceil(input.targets.length / Math.max(1, input.replicas));
  const owned = [...input.owned].sort((a, b) => score(input.replica, a) - score(input.replica, b));
  if (owned.length > share) return { acquire: [], release: owned.slice(share) };
  const free = input.targets.filter((k) => !input.taken.has(k)).sort((a, b) => score(input.replica, a) - score(input.replica, b));
  return { acquire: free.slice(0, share - owned.length), release: [] };
}

/** FNV-1a of replica + key: a stable per-replica preference order. */
function score(replica: string, key: string): number {
  let h = 0x811c9dc5;
  for (const c of `${replica}|${key}`) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0;
  return h;
}

/** Runs a promise with a deadline; the loser is abandoned, not cancelled. */
export function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

/**
 * Holds this replica's mailbox leases in a NATS KV bucket whose TTL expires any lease that is not
 * renewed. A lease is taken with `create` (fails if anyone holds it) and renewed with a
 * compare-and-set `update` on the revision we wrote, so two replicas can never both believe they
 * hold one: the loser's update fails and it stops at once. Considered and rejected: a JetStream
 * work-queue of mailboxes (no notion of "still owned" after a crash) and NATS queue groups (they
 * balance messages, not long-lived connections).
 */
export class LeaseManager {
  readonly #held = new Map<string, Held>();
  readonly #timing: LeaseTiming;
  readonly #now: () => number;
  readonly #log: Logger;
  #timer: NodeJS.Timeout | undefined;
  #fence: NodeJS.Timeout | undefined;
  #round: Promise<void> = Promise.resolve();
  #stopped = false;

  constructor(private readonly o: LeaseManagerOptions) {
    this.#timing = o.timing ?? DEFAULT_LEASE_TIMING;
    this.#now = o.now ?? Date.now;
    this.#log = o.logger.child({ component: "leases", replica: o.replica });
  }

  /** Lease keys this replica holds now. */
  get owned(): LeaseTarget[] {
    return [...this.#held.values()].map((h) => h.target);
  }

  async start(): Promise<void> {
    await this.#tick();
    this.#timer = setInterval(() => {
      // Rounds never overlap: a slow NATS round delays the next instead of racing it.
      this.#round = this.#round.then(() => this.#tick());
    }, this.#timing.renewEveryMs);
    // Checked independently of the rounds, so a hung NATS call cannot keep a stale owner polling.
    this.#fence = setInterval(() => void this.#checkFence(), 250);
  }

  /** Releases every lease (orderly stop of each worker first) so other replicas take over at once. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    clearInterval(this.#fence);
    await this.#round;
    await Promise.all([...this.#held.keys()].map((key) => this.#release(key)));
    await withDeadline(this.o.kv.delete(replicaKey(this.o.replica)), this.#timing.renewEveryMs, "heartbeat delete").catch(() => undefined);
  }

  async #checkFence(): Promise<void> {
    const limit = this.#timing.ttlMs - this.#timing.fenceMarginMs;
    for (const [key, held] of this.#held) {
      if (this.#now() - held.renewedSentAt > limit) await this.#lose(key, "lease could not be renewed in time");
    }
  }

  async #lose(key: string, reason: string): Promise<void> {
    const held = this.#held.get(key);
    if (!held) return;
    this.#held.delete(key);
    this.#log.warn({ tenant: held.target.tenant, mailbox: held.target.mailbox, reason }, "mailbox lease lost; polling stopped");
    await this.o.onLost(held.target, reason).catch((e: unknown) => this.#log.error({ problem: String(e) }, "stopping a worker failed"));
  }

  async #release(key: string): Promise<void> {
    const held = this.#held.get(key);
    if (!held) return;
    await this.o.onReleasing(held.target).catch((e: unknown) => this.#log.error({ problem: String(e) }, "stopping a worker failed"));
    this.#held.delete(key);
    // Delete only if still ours: a compare-and-set on our revision.
    await withDeadline(this.o.kv.delete(key, { previousSeq: held.revision }), this.#timing.renewEveryMs, "lease release").catch(() => undefined);
    this.#log.info({ tenant: held.target.tenant, mailbox: held.target.mailbox }, "mailbox lease released");
  }

  async #tick(): Promise<void> {
    if (this.#stopped) return;
    const deadline = this.#timing.renewEveryMs;
    const kv = this.o.kv;
    try {
      const beat: ReplicaHeartbeat = {
        version: "v1",
        replica: this.o.replica,
        tenants: this.o.tenants,
        owned: this.#held.size,
        at: new Date(this.#now()).toISOString(),
      };
      await withDeadline(kv.put(replicaKey(this.o.replica), JSON.stringify(beat)), deadline, "heartbeat");
      // Renewals in parallel batches: a replica holding a thousand leases renews them all well
      // inside one round instead of one round trip after another.
      const held = [...this.#held];
      for (let i = 0; i < held.length; i += 64) {
        await Promise.all(held.slice(i, i + 64).map(([key, h]) => this.#renew(key, h, deadline)));
      }
      const replicas = await this.#liveReplicas();
      const taken = new Set<string>();
      for (const k of await withDeadline(liveKeys(kv, "lease.>"), deadline, "lease list")) taken.add(k);
      const targets = new Map(this.o.targets.map((t) => [leaseKey(t.tenant, t.mailbox), t]));
      const plan = planLeases({ replica: this.o.replica, targets: [...targets.keys()], owned: [...this.#held.keys()], taken, replicas });
      for (const key of plan.release) await this.#release(key);
      // A bounded number per round, so a round stays short and the renewals of leases taken at
      // its start are never late (a replica starting on 1,000 mailboxes takes them over ~20 s).
      for (const key of plan.acquire.slice(0, MAX_ACQUIRE_PER_ROUND)) {
        if (this.#stopped) return;
        const target = targets.get(key)!;
        const sent = this.#now();
        const since = new Date(sent).toISOString();
        let revision: number;
        try {
          revision = await withDeadline(kv.create(key, this.#leaseValue(target, since, sent)), deadline, "lease take");
        } catch {
          continue; // someone else was quicker
        }
        this.#held.set(key, { target, revision, since, renewedSentAt: sent });
        this.#log.info({ tenant: target.tenant, mailbox: target.mailbox }, "mailbox lease taken");
        await this.o.onAcquired(target).catch((e: unknown) => this.#log.error({ problem: String(e) }, "starting a worker failed"));
      }
    } catch (error) {
      this.#log.warn({ problem: String(error) }, "lease round failed; retrying");
    }
  }

  async #renew(key: string, held: Held, deadline: number): Promise<void> {
    const sent = this.#now();
    try {
      held.revision = await withDeadline(this.o.kv.update(key, this.#leaseValue(held.target, held.since, sent), held.revision), deadline, "lease renewal");
      held.renewedSentAt = sent;
    } catch (error) {
      // A wrong revision means someone else holds it now (ours expired): stop at once.
      if (/wrong last sequence|key exists/i.test(String(error))) await this.#lose(key, "lease taken over by another replica");
      else this.#log.warn({ problem: String(error) }, "lease renewal failed; will retry");
    }
  }

  #leaseValue(target: LeaseTarget, since: string, at: number): string {
    const lease: MailboxLease = { version: "v1", owner: this.o.replica, tenant: target.tenant, mailbox: target.mailbox, since, renewedAt: new Date(at).toISOString() };
    return JSON.stringify(lease);
  }

  /** Replicas with a heartbeat that may serve at least one of our tenants (always counts us). */
  async #liveReplicas(): Promise<number> {
    const mine = new Set(this.o.targets.map((t) => t.tenant));
    let count = 0;
    for (const key of await withDeadline(liveKeys(this.o.kv, replicaKeys), this.#timing.renewEveryMs, "replica list")) {
      if (key === replicaKey(this.o.replica)) continue;
      const entry = await this.o.kv.get(key).catch(() => null);
      if (!entry?.value.length) continue;
      const beat = ReplicaHeartbeat.safeParse(entry.json());
      if (!beat.success) continue;
      if (beat.data.tenants === null || beat.data.tenants.some((t) => mine.has(t))) count++;
    }
    return count + 1;
  }
}
