/**
 * Postroom's own distributor, in its first, minimal form: one FIFO queue per (tenant, queue)
 * holding offered sessions until an agent takes them. Agents, reservations and overflow belong
 * to the agent-desktop work; this is what the walking skeleton offers to.
 */
export interface QueuedSession {
  sessionId: string;
  tenant: string;
  mailbox: string;
  queue: string;
  offeredAt: Date;
}

export class BuiltinDistributor {
  readonly #queues = new Map<string, QueuedSession[]>();

  offer(session: QueuedSession): void {
    const key = `${session.tenant}/${session.queue}`;
    const q = this.#queues.get(key) ?? [];
    if (q.some((s) => s.sessionId === session.sessionId)) return;
    q.push(session);
    this.#queues.set(key, q);
  }

  /** Sessions waiting in a queue, oldest first. */
  waiting(tenant: string, queue: string): readonly QueuedSession[] {
    return this.#queues.get(`${tenant}/${queue}`) ?? [];
  }
}
