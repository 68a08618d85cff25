import type { Pool, PoolClient } from "@postroom/db";
import { STORED_COLUMNS, stored, type LoopBreakerLimit, type MessageRow, type StoredMessage, type StoredRow } from "./store.js";

/** One received message of a batch, with the loop breaker's limit for its mailbox. */
export interface BatchRow {
  row: MessageRow;
  loopBreaker?: LoopBreakerLimit;
}

type Stored = StoredRow & { message_key: string };
const STORED = `message_key, ${STORED_COLUMNS}`;

/** Rows already stored under these message keys (redeliveries), by key. One statement. */
export async function findStored(pool: Pool | PoolClient, keys: string[]): Promise<Map<string, StoredMessage>> {
  if (keys.length === 0) return new Map();
  const r = await pool.query<Stored>(`SELECT ${STORED} FROM messages WHERE message_key = ANY($1::text[])`, [keys]);
  return new Map(r.rows.map((row) => [row.message_key, stored(row, false)]));
}

/** A conversation: an existing row's id, or one this batch creates (`new:<index of its first message>`). */
type Conversation = string;

/**
 * Archives a batch of received messages in ONE transaction with a fixed number of statements,
 * however many messages: the same outcome as inserting them one after another in batch order
 * (HistoryStore.insert), which the per-message archiver did.
 *
 * - Message keys are locked (advisory, in hash order so two replicas never deadlock) and looked up
 *   first: a key another replica stored meanwhile is returned as not inserted, and the messages
 *   insert still says `ON CONFLICT (message_key) DO NOTHING`.
 * - Threading is decided set-based: one query finds, for every message, the stored messages its
 *   In-Reply-To / References / bounced Message-ID name, one finds the stored messages that answer
 *   it (replies that arrived first). The decisions are then replayed in batch order in memory,
 *   where messages earlier in the batch count as stored — a reply and its original in one batch
 *   share a conversation whichever comes first — and conversations merged by an earlier message
 *   are followed.
 * - The loop breaker: senders locked as before, their messages in the window read once; each
 *   message counts the stored ones and those before it in the batch.
 * - Then one INSERT each for conversations, messages (unnest), addresses, attachments, audit
 *   events, and one UPDATE for merged conversations.
 */
export async function insertBatch(pool: Pool, batch: BatchRow[]): Promise<StoredMessage[]> {
  const client = await pool.connect();
  // A checked-out client whose server goes away emits "error"; see HistoryStore.insert.
  const ignore = () => undefined;
  client.on("error", ignore);
  let broken: Error | undefined;
  try {
    await client.query("BEGIN");
    const result = await insertInTransaction(client, batch);
    await client.query("COMMIT");
    return result;
  } catch (error) {
    if (await client.query("ROLLBACK").then(() => false, () => true)) broken = error as Error;
    throw error;
  } finally {
    client.off("error", ignore);
    client.release(broken);
  }
}

async function insertInTransaction(client: PoolClient, batch: BatchRow[]): Promise<StoredMessage[]> {
  const keys = batch.map((b) => b.row.messageKey);
  await client.query("SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest($1::text[]) AS k ORDER BY 1) AS s", [keys]);
  const already = await findStored(client, keys);
  const out: (StoredMessage | undefined)[] = batch.map((b) => already.get(b.row.messageKey));
  const todo = batch.map((b, i) => ({ ...b, i })).filter((b) => !out[b.i]);
  if (todo.length === 0) return out as StoredMessage[];

  // --- loop breaker -------------------------------------------------------------------------
  const senderOf = (m: MessageRow) => `loop-breaker/${m.tenant}/${m.mailbox}/${m.from?.address ?? ""}`;
  const counted = todo.filter((b) => b.loopBreaker && b.row.direction === "inbound" && (b.row.from?.address ?? "") !== "");
  const decided = new Map<number, { offer: boolean; classification: MessageRow["classification"]; reason: string | null; tripped?: { messages: number; alert: boolean } }>();
  if (counted.length > 0) {
    const senders = [...new Set(counted.map((b) => senderOf(b.row)))];
    await client.query("SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest($1::text[]) AS k ORDER BY 1) AS s", [senders]);
    // Each sender's stored messages over the span of its batch messages' windows, read once.
    const spans = new Map<string, { t: string; mb: string; s: string; lo: Date; hi: Date }>();
    for (const b of counted) {
      const k = senderOf(b.row);
      const lo = new Date(b.row.receivedAt.getTime() - b.loopBreaker!.windowMs);
      const hi = new Date(b.row.receivedAt.getTime() + b.loopBreaker!.windowMs);
      const x = spans.get(k);
      if (!x) spans.set(k, { t: b.row.tenant, mb: b.row.mailbox, s: b.row.from!.address, lo, hi });
      else {
        if (lo < x.lo) x.lo = lo;
        if (hi > x.hi) x.hi = hi;
      }
    }
    const v = [...spans.entries()];
    const recent = await client.query<{ k: string; received_at: Date }>(
      `SELECT q.k, m.received_at FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[]) AS q(k, t, mb, s, lo, hi)
       JOIN messages m ON m.tenant = q.t AND m.mailbox = q.mb AND m.from_address = q.s AND m.direction = 'inbound' AND m.received_at > q.lo AND m.received_at < q.hi`,
      [v.map(([k]) => k), v.map(([, x]) => x.t), v.map(([, x]) => x.mb), v.map(([, x]) => x.s), v.map(([, x]) => x.lo), v.map(([, x]) => x.hi)],
    );
    const storedTimes = new Map<string, number[]>();
    for (const r of recent.rows) storedTimes.set(r.k, [...(storedTimes.get(r.k) ?? []), r.received_at.getTime()]);
    const prior = await client.query<{ t: string; mb: string; s: string; last_tripped_at: Date }>(
      `SELECT l.tenant AS t, l.mailbox AS mb, l.sender AS s, l.last_tripped_at FROM unnest($1::text[], $2::text[], $3::text[]) AS q(t, mb, s)
       JOIN loop_breaker l ON l.tenant = q.t AND l.mailbox = q.mb AND l.sender = q.s`,
      [counted.map((b) => b.row.tenant), counted.map((b) => b.row.mailbox), counted.map((b) => b.row.from!.address)],
    );
    const lastTripped = new Map(prior.rows.map((r) => [`loop-breaker/${r.t}/${r.mb}/${r.s}`, r.last_tripped_at.getTime()]));
    const earlier = new Map<string, number[]>();
    for (const b of counted) {
      const m = b.row;
      const limit = b.loopBreaker!;
      const k = senderOf(m);
      const at = m.receivedAt.getTime();
      const inWindow = (t: number) => t > at - limit.windowMs && t < at + limit.windowMs;
      const messages = (storedTimes.get(k) ?? []).filter(inWindow).length + (earlier.get(k) ?? []).filter(inWindow).length + 1;
      earlier.set(k, [...(earlier.get(k) ?? []), at]);
      if (messages <= limit.maxMessages) continue;
      const minutes = limit.windowMs / 60_000;
      const sender = m.from!.address;
      const was = m.classification === "human" ? "" : ` (classified ${m.classification}: ${m.classificationReason ?? "no reason"})`;
      const last = lastTripped.get(k);
      const alert = last === undefined || last < at - limit.windowMs;
      lastTripped.set(k, Math.max(last ?? at, at));
      decided.set(b.i, {
        offer: false,
        classification: limit.keepVerdict ? m.classification : "loop",
        reason: limit.keepVerdict ? m.classificationReason : `loop breaker: ${messages} messages from ${sender} within ${minutes} minutes (limit ${limit.maxMessages})${was}`,
        tripped: { messages, alert },
      });
    }
    const trips = counted.filter((b) => decided.get(b.i)?.tripped);
    if (trips.length > 0) {
      // One row per sender: the latest trip time, whether any trip of this batch alerted, how many tripped.
      const bySender = new Map<string, { t: string; mb: string; s: string; at: Date; alert: boolean; n: number }>();
      for (const b of trips) {
        const k = senderOf(b.row);
        const x = bySender.get(k) ?? { t: b.row.tenant, mb: b.row.mailbox, s: b.row.from!.address, at: b.row.receivedAt, alert: false, n: 0 };
        if (b.row.receivedAt > x.at) x.at = b.row.receivedAt;
        x.alert ||= decided.get(b.i)!.tripped!.alert;
        x.n++;
        bySender.set(k, x);
      }
      const w = [...bySender.values()];
      // alerted_at carries the batch's decision: now() when one of its trips alerted, -infinity
      // (keep the stored one) otherwise. A sender without a row always alerts, so no row keeps -infinity.
      await client.query(
        `INSERT INTO loop_breaker (tenant, mailbox, sender, alerted_at, last_tripped_at, tripped)
         SELECT t, mb, s, CASE WHEN alert THEN now() ELSE '-infinity'::timestamptz END, at, n
         FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::boolean[], $6::bigint[]) AS q(t, mb, s, at, alert, n)
         ON CONFLICT (tenant, mailbox, sender) DO UPDATE SET
           last_tripped_at = GREATEST(loop_breaker.last_tripped_at, EXCLUDED.last_tripped_at),
           alerted_at = CASE WHEN EXCLUDED.alerted_at > '-infinity'::timestamptz THEN now() ELSE loop_breaker.alerted_at END,
           tripped = loop_breaker.tripped + EXCLUDED.tripped`,
        [w.map((x) => x.t), w.map((x) => x.mb), w.map((x) => x.s), w.map((x) => x.at), w.map((x) => x.alert), w.map((x) => x.n)],
      );
    }
  }

  // --- threading ----------------------------------------------------------------------------
  const relatedOf = (m: MessageRow) => [m.inReplyTo, ...m.references, m.bounce?.of].filter((x): x is string => !!x);
  const mbOf = (m: MessageRow) => `${m.tenant}\u0000${m.mailbox}`;
  const ask: { i: number; t: string; mb: string; rid: string }[] = [];
  for (const b of todo) for (const rid of relatedOf(b.row)) ask.push({ i: b.i, t: b.row.tenant, mb: b.row.mailbox, rid });
  // For each message, the conversation of the lowest-id stored message it names.
  const named = new Map<number, Conversation>();
  if (ask.length > 0) {
    const r = await client.query<{ i: number; conversation_id: string }>(
      `SELECT DISTINCT ON (q.i) q.i, m.conversation_id FROM unnest($1::int[], $2::text[], $3::text[], $4::text[]) AS q(i, t, mb, rid)
       JOIN messages m ON m.tenant = q.t AND m.mailbox = q.mb AND m.rfc_message_id = q.rid ORDER BY q.i, m.id`,
      [ask.map((a) => a.i), ask.map((a) => a.t), ask.map((a) => a.mb), ask.map((a) => a.rid)],
    );
    for (const row of r.rows) named.set(row.i, row.conversation_id);
  }
  // For each message, the conversations of stored messages that answer it (they arrived first).
  const answeredBy = new Map<number, Conversation[]>();
  {
    const r = await client.query<{ i: number; conversation_id: string }>(
      `SELECT DISTINCT q.i, m.conversation_id FROM unnest($1::int[], $2::text[], $3::text[], $4::text[]) AS q(i, t, mb, rid)
       JOIN messages m ON m.tenant = q.t AND m.mailbox = q.mb AND (m.in_reply_to = q.rid OR m."references" @> ARRAY[q.rid])`,
      [todo.map((b) => b.i), todo.map((b) => b.row.tenant), todo.map((b) => b.row.mailbox), todo.map((b) => b.row.rfcMessageId)],
    );
    for (const row of r.rows) answeredBy.set(row.i, [...(answeredBy.get(row.i) ?? []), row.conversation_id]);
  }
  // Replay in batch order. `merged` follows a conversation into the one it was merged into.
  const merged = new Map<Conversation, Conversation>();
  const current = (c: Conversation): Conversation => {
    let x = c;
    while (merged.has(x)) x = merged.get(x)!;
    return x;
  };
  const convOf = new Map<number, Conversation>();
  const done: typeof todo = [];
  for (const b of todo) {
    const m = b.row;
    const related = new Set(relatedOf(m));
    let conv: Conversation | undefined;
    const stored = named.get(b.i);
    if (stored !== undefined) conv = current(stored);
    else {
      // Stored rows have lower ids than this batch's, so an earlier batch message counts only when no stored one is named.
      const first = done.find((d) => mbOf(d.row) === mbOf(m) && related.has(d.row.rfcMessageId));
      if (first) conv = current(convOf.get(first.i)!);
    }
    conv ??= `new:${b.i}`;
    convOf.set(b.i, conv);
    // Replies that arrived before this message join its conversation, with everything threaded to them.
    const answering = new Set<Conversation>((answeredBy.get(b.i) ?? []).map(current));
    for (const d of done) {
      if (mbOf(d.row) === mbOf(m) && (d.row.inReplyTo === m.rfcMessageId || d.row.references.includes(m.rfcMessageId))) answering.add(current(convOf.get(d.i)!));
    }
    answering.delete(conv);
    for (const c of answering) merged.set(c, conv);
    done.push(b);
  }
  // New conversations that still hold a message, in batch order.
  const created = [...new Set(todo.map((b) => current(convOf.get(b.i)!)))].filter((c) => c.startsWith("new:"));
  const newId = new Map<Conversation, string>();
  if (created.length > 0) {
    const firsts = created.map((c) => batch[Number(c.slice(4))]!.row);
    const r = await client.query<{ id: string; ord: number }>(
      `WITH q AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) WITH ORDINALITY AS q(t, mb, subject, started_at, ord)),
            ins AS (INSERT INTO conversations (tenant, mailbox, subject, started_at) SELECT t, mb, subject, started_at FROM q ORDER BY ord RETURNING id)
       SELECT id FROM ins ORDER BY id`,
      [firsts.map((m) => m.tenant), firsts.map((m) => m.mailbox), firsts.map((m) => m.subject), firsts.map((m) => m.receivedAt)],
    );
    // Ids come from one sequence in the order the rows were inserted (ordered by ord), so sorted ids line up with `created`.
    r.rows.forEach((row, k) => newId.set(created[k]!, row.id));
  }
  const resolve = (c: Conversation): string => {
    const x = current(c);
    return x.startsWith("new:") ? newId.get(x)! : x;
  };

  // --- messages -----------------------------------------------------------------------------
  const rows = todo.map((b) => {
    const d = decided.get(b.i);
    return { b, m: b.row, offer: d ? d.offer : b.row.offer, classification: d ? d.classification : b.row.classification, reason: d ? d.reason : b.row.classificationReason, conversationId: resolve(convOf.get(b.i)!) };
  });
  const col = <T>(f: (x: (typeof rows)[number]) => T) => rows.map(f);
  const inserted = await client.query<{ id: string; message_key: string }>(
    `INSERT INTO messages (message_key, tenant, mailbox, direction, protocol, folder, uid_validity, uid, uidl, rfc_message_id,
       in_reply_to, "references", subject, from_address, date_header, received_at, size, sha256, archive_path, headers,
       text_body, html_body, is_auto_reply, is_bounce, is_loop, oversize, parse_error, offer, conversation_id,
       classification, classification_reason, date_raw, bounce_of, bounce_status, bounce_diagnostic)
     SELECT k, t, mb, dir, proto, folder, uv, uid, uidl, rid, irt, ARRAY(SELECT jsonb_array_elements_text(refs)), subject, sender, dh, ra, size, sha, path, headers,
       tb, hb, cls = 'auto-reply', cls = 'bounce', cls = 'loop', oversize, perr, offer, conv, cls, reason, draw, bof, bst, bdiag
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[], $9::text[], $10::text[],
       $11::text[], $12::jsonb[], $13::text[], $14::text[], $15::timestamptz[], $16::timestamptz[], $17::bigint[], $18::text[], $19::text[], $20::jsonb[],
       $21::text[], $22::text[], $23::text[], $24::boolean[], $25::text[], $26::boolean[], $27::bigint[], $28::text[], $29::text[], $30::text[], $31::text[], $32::text[])
       WITH ORDINALITY AS u(k, t, mb, dir, proto, folder, uv, uid, uidl, rid, irt, refs, subject, sender, dh, ra, size, sha, path, headers,
         tb, hb, cls, oversize, perr, offer, conv, reason, draw, bof, bst, bdiag, ord)
     ORDER BY ord
     ON CONFLICT (message_key) DO NOTHING
     RETURNING id, message_key`,
    [
      col((x) => x.m.messageKey), col((x) => x.m.tenant), col((x) => x.m.mailbox), col((x) => x.m.direction), col((x) => x.m.protocol),
      col((x) => x.m.folder), col((x) => x.m.uidValidity), col((x) => x.m.uid), col((x) => x.m.uidl), col((x) => x.m.rfcMessageId),
      col((x) => x.m.inReplyTo), col((x) => JSON.stringify(x.m.references)), col((x) => x.m.subject), col((x) => x.m.from?.address ?? ""),
      col((x) => x.m.dateHeader), col((x) => x.m.receivedAt), col((x) => x.m.size), col((x) => x.m.sha256), col((x) => x.m.archivePath),
      col((x) => JSON.stringify(x.m.headers)), col((x) => x.m.textBody), col((x) => x.m.htmlBody), col((x) => x.classification),
      col((x) => x.m.oversize), col((x) => x.m.parseError), col((x) => x.offer), col((x) => x.conversationId), col((x) => x.reason),
      col((x) => x.m.dateRaw), col((x) => x.m.bounce?.of ?? null), col((x) => x.m.bounce?.status ?? null), col((x) => x.m.bounce?.diagnostic ?? null),
    ],
  );
  const idOf = new Map(inserted.rows.map((r) => [r.message_key, r.id]));
  const mine = rows.filter((x) => idOf.has(x.m.messageKey));
  if (mine.length < rows.length) {
    // Stored by someone else between our lock and insert cannot happen (the key lock), but if it
    // ever did, that row stands and ours is confirmed as a redelivery.
    const others = await findStored(client, rows.filter((x) => !idOf.has(x.m.messageKey)).map((x) => x.m.messageKey));
    for (const x of rows) if (!idOf.has(x.m.messageKey)) out[x.b.i] = others.get(x.m.messageKey);
  }

  // --- merges, addresses, attachments, audit ------------------------------------------------
  const moves = [...merged.keys()].filter((c) => !c.startsWith("new:"));
  if (moves.length > 0) {
    await client.query(
      "UPDATE messages SET conversation_id = q.target FROM unnest($1::bigint[], $2::bigint[]) AS q(source, target) WHERE messages.conversation_id = q.source",
      [moves, moves.map(resolve)],
    );
  }
  const a = { id: [] as string[], role: [] as string[], address: [] as string[], name: [] as (string | null)[] };
  const p = { id: [] as string[], part: [] as number[], original: [] as (string | null)[], stored: [] as string[], type: [] as string[], cid: [] as (string | null)[], inline: [] as boolean[], size: [] as number[], sha: [] as string[] };
  for (const x of mine) {
    const id = idOf.get(x.m.messageKey)!;
    const list: [string, { address: string; name: string | null }][] = [
      ...(x.m.from ? [["from", x.m.from] as [string, { address: string; name: string | null }]] : []),
      ...x.m.to.map((v) => ["to", v] as [string, typeof v]),
      ...x.m.cc.map((v) => ["cc", v] as [string, typeof v]),
      ...x.m.bcc.map((v) => ["bcc", v] as [string, typeof v]),
      ...(x.m.replyTo ?? []).map((v) => ["reply-to", v] as [string, typeof v]),
    ];
    for (const [role, v] of list) {
      a.id.push(id);
      a.role.push(role);
      a.address.push(v.address);
      a.name.push(v.name);
    }
    for (const t of x.m.attachments) {
      p.id.push(id);
      p.part.push(t.partIndex);
      p.original.push(t.originalName);
      p.stored.push(t.storedName);
      p.type.push(t.contentType);
      p.cid.push(t.contentId);
      p.inline.push(t.inline);
      p.size.push(t.size);
      p.sha.push(t.sha256);
    }
  }
  if (a.id.length > 0) {
    await client.query("INSERT INTO addresses (message_id, role, address, name) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])", [a.id, a.role, a.address, a.name]);
  }
  if (p.id.length > 0) {
    await client.query(
      `INSERT INTO attachments (message_id, part_index, original_name, stored_name, content_type, content_id, inline, size, sha256)
       SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::boolean[], $8::bigint[], $9::text[])`,
      [p.id, p.part, p.original, p.stored, p.type, p.cid, p.inline, p.size, p.sha],
    );
  }
  if (mine.length > 0) {
    await client.query(
      "INSERT INTO audit_events (tenant, mailbox, actor, kind, ref) SELECT t, mb, 'archiver', k, r FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS q(t, mb, k, r)",
      [mine.map((x) => x.m.tenant), mine.map((x) => x.m.mailbox), mine.map((x) => (x.m.direction === "inbound" ? "message.archived" : "reply.archived")), mine.map((x) => x.m.messageKey)],
    );
  }
  for (const x of mine) {
    const d = decided.get(x.b.i);
    out[x.b.i] = {
      id: idOf.get(x.m.messageKey)!,
      // The conversation after every merge of this batch.
      conversationId: resolve(convOf.get(x.b.i)!),
      archivePath: x.m.archivePath,
      rfcMessageId: x.m.rfcMessageId,
      inserted: true,
      offer: x.offer,
      classification: x.classification,
      classificationReason: x.reason,
      ...(d?.tripped ? { loopBreaker: d.tripped } : {}),
    };
  }
  return out as StoredMessage[];
}
