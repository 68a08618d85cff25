/**
 * Postroom's own distributor for teams without an ACD: queues with agents, longest-idle agent
 * first, a per-agent limit, a reservation that lapses back to the queue, overflow after a queue
 * timeout (or, without an overflow, an `unanswered` event for the bridge's policy), and transfers.
 *
 * It is a pure state machine over an injected clock: nothing here starts a timer. The owner
 * calls `tick()` (the bridge does every 250 ms) so that reservation and queue timeouts fire, and
 * tests drive the clock by hand. Every change is reported through `onEvent`; the bridge turns
 * those into session states in PostgreSQL and `session.*` events. State lives in memory and is
 * rebuilt from PostgreSQL at start (see `AsdBridge.#restore`).
 */

export interface QueuedSession {
  sessionId: string;
  tenant: string;
  mailbox: string;
  queue: string;
  offeredAt: Date;
}

export type DistributorEvent =
  | { type: "queued"; sessionId: string; tenant: string; queue: string }
  | { type: "assigned"; sessionId: string; tenant: string; queue: string; agent: string; reservedUntil: number }
  | { type: "delivered"; sessionId: string; tenant: string; queue: string; agent: string }
  | { type: "reservation-expired"; sessionId: string; tenant: string; queue: string; agent: string }
  | { type: "timed-out"; sessionId: string; tenant: string; from: string; queue: string }
  /** The queue's timeout ran out and it has no overflow: the session left the distributor; the bridge's unanswered policy decides. */
  | { type: "unanswered"; sessionId: string; tenant: string; queue: string; reason: "queue-timeout" }
  | { type: "transferred"; sessionId: string; tenant: string; queue: string; from: string | null; to: { agent: string } | { queue: string } }
  | { type: "completed"; sessionId: string; tenant: string; queue: string; agent: string | null; outcome: string };

export interface QueueSettings {
  timeoutSeconds?: number | undefined;
  overflow?: string | undefined;
}

export interface TenantSettings {
  reservationSeconds: number;
  queues: Record<string, QueueSettings>;
  agents: { id: string; maxSessions: number }[];
}

export interface BuiltinDistributorOptions {
  tenants: Record<string, TenantSettings>;
  clock?: () => number;
  onEvent?: (e: DistributorEvent) => void;
}

/** A request the distributor refuses (unknown agent, session not the agent's, limit reached). */
export class DistributionError extends Error {
  override name = "DistributionError";
  constructor(
    message: string,
    readonly code: "unknown-agent" | "unknown-session" | "not-yours" | "limit" | "unknown-queue" | "not-logged-in" | "unsupported",
  ) {
    super(message);
  }
}

type Held = QueuedSession & {
  /** When it entered its current queue (for the queue timeout and "oldest waiting"). */
  queuedAt: number;
  agent: string | null;
  status: "waiting" | "reserved" | "delivered";
  reservedUntil: number;
  /** Agents whose reservation of this session lapsed: tried last, so that another gets it. */
  lapsedBy: Set<string>;
  /** A transfer to a named agent waits for that agent only. */
  forAgent: string | null;
};

interface AgentState {
  id: string;
  maxSessions: number;
  queues: Set<string>;
  /** When the agent last became idle or last got a session: the longest idle goes first. */
  idleSince: number;
  loggedIn: boolean;
}

export interface QueueView {
  queue: string;
  waiting: number;
  oldestWaitingSeconds: number | null;
  agentsLoggedIn: string[];
}

export class BuiltinDistributor {
  readonly #sessions = new Map<string, Held>();
  readonly #agents = new Map<string, AgentState>();
  readonly #now: () => number;
  readonly #emit: (e: DistributorEvent) => void;
  /** Counters for the metrics work to read; no telemetry dependency here. */
  readonly stats = { offered: 0, assigned: 0, reservationsExpired: 0, overflowed: 0, unanswered: 0, transferred: 0, completed: 0 };

  constructor(private readonly o: BuiltinDistributorOptions) {
    this.#now = o.clock ?? Date.now;
    this.#emit = o.onEvent ?? (() => undefined);
    for (const [tenant, t] of Object.entries(o.tenants)) {
      for (const a of t.agents) {
        this.#agents.set(key(tenant, a.id), { id: a.id, maxSessions: a.maxSessions, queues: new Set(), idleSince: 0, loggedIn: false });
      }
    }
  }

  /** Puts a session into its queue (idempotent: a session already held is left as it is). */
  offer(session: QueuedSession): void {
    if (this.#sessions.has(session.sessionId)) return;
    this.stats.offered++;
    this.#sessions.set(session.sessionId, {
      ...session,
      queuedAt: this.#now(),
      agent: null,
      status: "waiting",
      reservedUntil: 0,
      lapsedBy: new Set(),
      forAgent: null,
    });
    this.#emit({ type: "queued", sessionId: session.sessionId, tenant: session.tenant, queue: session.queue });
    this.dispatch();
  }

  /** Rebuilds a session an agent already had before a restart. */
  restoreDelivered(session: QueuedSession, agent: string): void {
    if (this.#sessions.has(session.sessionId)) return;
    this.#sessions.set(session.sessionId, {
      ...session,
      queuedAt: this.#now(),
      agent,
      status: "delivered",
      reservedUntil: 0,
      lapsedBy: new Set(),
      forAgent: null,
    });
  }

  /** Logs an agent in to queues (added to the ones it already has). */
  login(tenant: string, agent: string, queues: string[]): void {
    const a = this.#agent(tenant, agent);
    if (!a.loggedIn) a.idleSince = this.#now();
    a.loggedIn = true;
    for (const q of queues) a.queues.add(q);
    this.dispatch();
  }

  /** Logs an agent out of some queues, or of all of them (and out entirely) when none are named. */
  logout(tenant: string, agent: string, queues?: string[]): void {
    const a = this.#agent(tenant, agent);
    if (!queues) a.queues.clear();
    else for (const q of queues) a.queues.delete(q);
    if (a.queues.size === 0) a.loggedIn = false;
    // Reservations not yet accepted go back to the queue now rather than waiting to lapse.
    for (const s of this.#sessions.values()) {
      if (s.tenant === tenant && s.agent === agent && s.status === "reserved" && (!a.loggedIn || !a.queues.has(s.queue))) this.#requeue(s);
    }
    this.dispatch();
  }

  agentQueues(tenant: string, agent: string): string[] {
    return [...this.#agent(tenant, agent).queues];
  }

  /** The agent takes a reserved session: it is now in the agent's hands. */
  accept(tenant: string, agent: string, sessionId: string): void {
    const s = this.#mine(tenant, agent, sessionId);
    if (s.status === "delivered") return;
    s.status = "delivered";
    this.#emit({ type: "delivered", sessionId, tenant, queue: s.queue, agent });
  }

  /** Ends a session the agent holds. */
  close(tenant: string, agent: string, sessionId: string, outcome: string): void {
    const s = this.#mine(tenant, agent, sessionId);
    this.#sessions.delete(sessionId);
    this.stats.completed++;
    const a = this.#agents.get(key(tenant, agent));
    if (a) a.idleSince = this.#now();
    this.#emit({ type: "completed", sessionId, tenant, queue: s.queue, agent, outcome });
    this.dispatch();
  }

  /** Hands a session the agent holds to a named agent (of the same tenant) or to a queue. */
  transfer(tenant: string, agent: string, sessionId: string, to: { agent: string } | { queue: string }): void {
    const s = this.#mine(tenant, agent, sessionId);
    if ("agent" in to) {
      const target = this.#agent(tenant, to.agent);
      if (!target.loggedIn) throw new DistributionError(`agent ${to.agent} is not logged in`, "not-logged-in");
    } else if (!this.#knownQueue(tenant, to.queue)) {
      throw new DistributionError(`queue ${to.queue} is not configured`, "unknown-queue");
    }
    const a = this.#agents.get(key(tenant, agent));
    if (a) a.idleSince = this.#now();
    this.stats.transferred++;
    s.agent = null;
    s.status = "waiting";
    s.queuedAt = this.#now();
    s.lapsedBy.clear();
    if ("queue" in to) {
      s.queue = to.queue;
      s.forAgent = null;
    } else s.forAgent = to.agent;
    this.#emit({ type: "transferred", sessionId, tenant, queue: s.queue, from: agent, to });
    this.dispatch();
  }

  /** Sessions an agent holds (reserved or delivered), oldest first. */
  sessionsOf(tenant: string, agent: string): { sessionId: string; mailbox: string; queue: string; status: "reserved" | "delivered"; reservedUntil: number }[] {
    return [...this.#sessions.values()]
      .filter((s) => s.tenant === tenant && s.agent === agent && s.status !== "waiting")
      .map((s) => ({ sessionId: s.sessionId, mailbox: s.mailbox, queue: s.queue, status: s.status as "reserved" | "delivered", reservedUntil: s.reservedUntil }));
  }

  /** Who holds a session now, if anyone (the API's ownership check). */
  holder(sessionId: string): { tenant: string; agent: string | null; status: Held["status"] } | undefined {
    const s = this.#sessions.get(sessionId);
    return s && { tenant: s.tenant, agent: s.agent, status: s.status };
  }

  /** Sessions waiting in a queue, oldest first. */
  waiting(tenant: string, queue: string): readonly QueuedSession[] {
    return [...this.#sessions.values()].filter((s) => s.tenant === tenant && s.queue === queue && s.status === "waiting").sort((a, b) => a.queuedAt - b.queuedAt);
  }

  /** The supervisor's view of a tenant: every queue with waiting sessions, configured, or staffed. */
  queues(tenant: string): QueueView[] {
    const names = new Set<string>(Object.keys(this.o.tenants[tenant]?.queues ?? {}));
    for (const s of this.#sessions.values()) if (s.tenant === tenant) names.add(s.queue);
    for (const [k, a] of this.#agents) if (k.startsWith(`${tenant}/`)) for (const q of a.queues) names.add(q);
    const now = this.#now();
    return [...names].sort().map((queue) => {
      const waiting = this.waiting(tenant, queue);
      const oldest = waiting[0] ? (waiting[0] as Held).queuedAt : undefined;
      return {
        queue,
        waiting: waiting.length,
        oldestWaitingSeconds: oldest === undefined ? null : Math.max(0, Math.round((now - oldest) / 1000)),
        agentsLoggedIn: [...this.#agents.entries()].filter(([k, a]) => k.startsWith(`${tenant}/`) && a.loggedIn && a.queues.has(queue)).map(([, a]) => a.id).sort(),
      };
    });
  }

  /** Fires due reservation and queue timeouts, then hands waiting sessions to free agents. */
  tick(): void {
    const now = this.#now();
    for (const s of this.#sessions.values()) {
      if (s.status === "reserved" && now >= s.reservedUntil) {
        const agent = s.agent!;
        this.stats.reservationsExpired++;
        s.lapsedBy.add(agent);
        this.#emit({ type: "reservation-expired", sessionId: s.sessionId, tenant: s.tenant, queue: s.queue, agent });
        // The lapsed agent counts as busy-then-idle: it goes behind the others.
        const a = this.#agents.get(key(s.tenant, agent));
        if (a) a.idleSince = now;
        this.#requeue(s, false);
      }
    }
    for (const s of this.#sessions.values()) {
      if (s.status !== "waiting" || s.forAgent) continue;
      const q = this.o.tenants[s.tenant]?.queues[s.queue];
      if (q?.timeoutSeconds === undefined || now - s.queuedAt < q.timeoutSeconds * 1000) continue;
      if (!q.overflow) {
        // Nowhere to overflow to: not silently kept waiting forever, not closed either — the
        // bridge applies the tenant's unanswered policy (requeue, fallback or close).
        this.stats.unanswered++;
        this.#sessions.delete(s.sessionId);
        this.#emit({ type: "unanswered", sessionId: s.sessionId, tenant: s.tenant, queue: s.queue, reason: "queue-timeout" });
        continue;
      }
      this.stats.overflowed++;
      const from = s.queue;
      s.queue = q.overflow;
      s.queuedAt = now;
      this.#emit({ type: "timed-out", sessionId: s.sessionId, tenant: s.tenant, from, queue: s.queue });
    }
    this.dispatch();
  }

  /** Hands waiting sessions, oldest first, to the longest-idle logged-in agent with room. */
  dispatch(): void {
    const waiting = [...this.#sessions.values()].filter((s) => s.status === "waiting").sort((a, b) => a.queuedAt - b.queuedAt);
    for (const s of waiting) {
      const agent = this.#pick(s);
      if (!agent) continue;
      const settings = this.o.tenants[s.tenant];
      s.agent = agent.id;
      s.status = "reserved";
      s.forAgent = null;
      s.reservedUntil = this.#now() + (settings?.reservationSeconds ?? 60) * 1000;
      agent.idleSince = this.#now();
      this.stats.assigned++;
      this.#emit({ type: "assigned", sessionId: s.sessionId, tenant: s.tenant, queue: s.queue, agent: agent.id, reservedUntil: s.reservedUntil });
    }
  }

  #pick(s: Held): AgentState | undefined {
    const free = (a: AgentState) => a.loggedIn && this.#load(s.tenant, a.id) < a.maxSessions;
    if (s.forAgent) {
      const a = this.#agents.get(key(s.tenant, s.forAgent));
      return a && free(a) ? a : undefined;
    }
    const candidates = [...this.#agents.entries()]
      .filter(([k, a]) => k.startsWith(`${s.tenant}/`) && a.queues.has(s.queue) && free(a))
      .map(([, a]) => a)
      .sort((x, y) => Number(s.lapsedBy.has(x.id)) - Number(s.lapsedBy.has(y.id)) || x.idleSince - y.idleSince || x.id.localeCompare(y.id));
    return candidates[0];
  }

  #load(tenant: string, agent: string): number {
    let n = 0;
    for (const s of this.#sessions.values()) if (s.tenant === tenant && s.agent === agent) n++;
    return n;
  }

  #requeue(s: Held, emit = true): void {
    s.agent = null;
    s.status = "waiting";
    // Back at the head of its queue: it has waited longest.
    if (emit) this.#emit({ type: "queued", sessionId: s.sessionId, tenant: s.tenant, queue: s.queue });
  }

  #knownQueue(tenant: string, queue: string): boolean {
    return this.queues(tenant).some((q) => q.queue === queue);
  }

  #agent(tenant: string, agent: string): AgentState {
    const a = this.#agents.get(key(tenant, agent));
    if (!a) throw new DistributionError(`agent ${agent} is not configured in tenant ${tenant}`, "unknown-agent");
    return a;
  }

  #mine(tenant: string, agent: string, sessionId: string): Held {
    const s = this.#sessions.get(sessionId);
    // The same answer whether the session is missing or someone else's: no probing across agents.
    if (!s || s.tenant !== tenant) throw new DistributionError("no such session", "unknown-session");
    if (s.agent !== agent || s.status === "waiting") throw new DistributionError("this session is not yours", "not-yours");
    return s;
  }
}

function key(tenant: string, agent: string): string {
  return `${tenant}/${agent}`;
}
