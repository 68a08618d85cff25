import { randomUUID } from "node:crypto";
import type { Pool } from "@postroom/db";

export interface SessionRow {
  id: string;
  state: string;
  queue: string;
  created: boolean;
}

/** Session lifecycle in PostgreSQL. A message has at most one session, whatever is redelivered. */
export class SessionStore {
  constructor(private readonly pool: Pool) {}

  /** Creates the session for a message, or returns the one that exists. */
  async createOrGet(input: { tenant: string; mailbox: string; messageId: string; queue: string; acd: string; warnings: string[] }): Promise<SessionRow> {
    const id = randomUUID();
    const client = await this.pool.connect();
    try {
      await client.query("BEGIN");
      const r = await client.query<{ id: string }>(
        `INSERT INTO sessions (id, tenant, mailbox, message_id, queue, acd, state, warnings)
         VALUES ($1, $2, $3, $4, $5, $6, 'created', $7) ON CONFLICT (message_id) DO NOTHING RETURNING id`,
        [id, input.tenant, input.mailbox, input.messageId, input.queue, input.acd, input.warnings],
      );
      if (r.rows[0]) {
        await client.query("INSERT INTO session_events (session_id, state) VALUES ($1, 'created')", [id]);
        await client.query("COMMIT");
        return { id, state: "created", queue: input.queue, created: true };
      }
      await client.query("COMMIT");
    } catch (error) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
    const existing = await this.pool.query<{ id: string; state: string; queue: string }>("SELECT id, state, queue FROM sessions WHERE message_id = $1", [input.messageId]);
    const row = existing.rows[0]!;
    return { ...row, created: false };
  }

  /** Moves a session to a new state and records it in the history. */
  async transition(id: string, state: string, detail: Record<string, unknown> = {}, extra: { agent?: string; outcome?: string } = {}): Promise<void> {
    await this.pool.query(
      `WITH s AS (
         UPDATE sessions SET state = $2, updated_at = now(),
           offered_at = CASE WHEN $2 = 'offered' THEN now() ELSE offered_at END,
           agent = COALESCE($4, agent), outcome = COALESCE($5, outcome)
         WHERE id = $1 RETURNING id)
       INSERT INTO session_events (session_id, state, detail) SELECT id, $2, $3 FROM s`,
      [id, state, JSON.stringify(detail), extra.agent ?? null, extra.outcome ?? null],
    );
  }
}
