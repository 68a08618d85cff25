/**
 * Versioned schema migrations, applied in order at every service's start-up. Never edit a
 * migration that has shipped: add a new one. Each runs in its own transaction.
 */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const migrations: Migration[] = [
  {
    version: 1,
    name: "history",
    sql: `
CREATE TABLE mailboxes (
  id          bigserial PRIMARY KEY,
  tenant      text NOT NULL,
  mailbox     text NOT NULL,
  address     text,
  created_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant, mailbox)
);

CREATE TABLE conversations (
  id          bigserial PRIMARY KEY,
  tenant      text NOT NULL,
  mailbox     text NOT NULL,
  subject     text,
  started_at  timestamptz NOT NULL DEFAULT now()
);

-- Received and sent messages. message_key is the source identity
-- (tenant/mailbox/imap/folder/uidvalidity/uid, tenant/mailbox/pop3/uidl, or tenant/mailbox/sent/command):
-- a second delivery of the same message finds the row and changes nothing.
CREATE TABLE messages (
  id              bigserial PRIMARY KEY,
  message_key     text NOT NULL UNIQUE,
  tenant          text NOT NULL,
  mailbox         text NOT NULL,
  direction       text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
  protocol        text NOT NULL CHECK (protocol IN ('imap', 'pop3', 'smtp')),
  folder          text,
  uid_validity    bigint,
  uid             bigint,
  uidl            text,
  rfc_message_id  text NOT NULL,
  in_reply_to     text,
  "references"    text[] NOT NULL DEFAULT '{}',
  subject         text NOT NULL DEFAULT '',
  from_address    text NOT NULL DEFAULT '',
  date_header     timestamptz,
  received_at     timestamptz NOT NULL,
  archived_at     timestamptz NOT NULL DEFAULT now(),
  size            bigint NOT NULL,
  sha256          text NOT NULL,
  archive_path    text NOT NULL,
  headers         jsonb NOT NULL DEFAULT '[]',
  text_body       text,
  html_body       text,
  is_auto_reply   boolean NOT NULL DEFAULT false,
  is_bounce       boolean NOT NULL DEFAULT false,
  is_loop         boolean NOT NULL DEFAULT false,
  oversize        boolean NOT NULL DEFAULT false,
  parse_error     text,
  offer           boolean NOT NULL DEFAULT true,
  conversation_id bigint NOT NULL REFERENCES conversations(id),
  purged_at       timestamptz
);
CREATE UNIQUE INDEX messages_imap_key ON messages (tenant, mailbox, folder, uid_validity, uid) WHERE protocol = 'imap';
CREATE UNIQUE INDEX messages_pop3_key ON messages (tenant, mailbox, uidl) WHERE protocol = 'pop3';
CREATE INDEX messages_conversation ON messages (conversation_id, received_at);
CREATE INDEX messages_mailbox_time ON messages (tenant, mailbox, received_at);
CREATE INDEX messages_rfc_id ON messages (tenant, mailbox, rfc_message_id);

CREATE TABLE addresses (
  message_id  bigint NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
  role        text NOT NULL CHECK (role IN ('from', 'to', 'cc', 'bcc', 'reply-to')),
  address     text NOT NULL,
  name        text
);
CREATE INDEX addresses_address ON addresses (lower(address));
CREATE INDEX addresses_message ON addresses (message_id);

CREATE TABLE attachments (
  id                bigserial PRIMARY KEY,
  message_id        bigint NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
  part_index        int NOT NULL,
  original_name     text,
  stored_name       text NOT NULL,
  content_type      text NOT NULL,
  content_id        text,
  inline            boolean NOT NULL DEFAULT false,
  size              bigint NOT NULL,
  sha256            text NOT NULL,
  UNIQUE (message_id, part_index)
);

-- ACD sessions: one per offered message, never two.
CREATE TABLE sessions (
  id            uuid PRIMARY KEY,
  tenant        text NOT NULL,
  mailbox       text NOT NULL,
  message_id    bigint NOT NULL UNIQUE REFERENCES messages(id),
  queue         text NOT NULL,
  acd           text NOT NULL,
  state         text NOT NULL,
  agent         text,
  outcome       text,
  warnings      text[] NOT NULL DEFAULT '{}',
  created_at    timestamptz NOT NULL DEFAULT now(),
  offered_at    timestamptz,
  updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sessions_queue_state ON sessions (tenant, queue, state);

CREATE TABLE session_events (
  id          bigserial PRIMARY KEY,
  session_id  uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
  state       text NOT NULL,
  at          timestamptz NOT NULL DEFAULT now(),
  detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX session_events_session ON session_events (session_id, at);

-- Outgoing sends, keyed by the command id: pending -> sending -> sent | failed.
CREATE TABLE sends (
  command_id      text PRIMARY KEY,
  tenant          text NOT NULL,
  mailbox         text NOT NULL,
  kind            text NOT NULL,
  state           text NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
  rfc_message_id  text NOT NULL,
  attempts        int NOT NULL DEFAULT 0,
  last_error      text,
  server_response text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Audit trail: who did what to which message or session.
CREATE TABLE audit_events (
  id          bigserial PRIMARY KEY,
  at          timestamptz NOT NULL DEFAULT now(),
  tenant      text NOT NULL,
  mailbox     text,
  actor       text NOT NULL,
  kind        text NOT NULL,
  ref         text,
  detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_ref ON audit_events (ref);
`,
  },
  {
    version: 30,
    name: "sends-recovery",
    // smtp-sender keeps what it needs to finish a send after a crash without composing it again:
    // the raw message (already in the object store before the first SMTP attempt), the envelope
    // and the threading headers, so a redelivered command whose row says "sent" can still publish
    // mail.sent without touching the SMTP server again.
    sql: `
ALTER TABLE sends ADD COLUMN raw_object text;
ALTER TABLE sends ADD COLUMN raw_size bigint;
ALTER TABLE sends ADD COLUMN raw_sha256 text;
ALTER TABLE sends ADD COLUMN envelope jsonb;
ALTER TABLE sends ADD COLUMN in_reply_to text;
ALTER TABLE sends ADD COLUMN reply_references text[] NOT NULL DEFAULT '{}';
ALTER TABLE sends ADD COLUMN sent_at timestamptz;
`,
  },
  {
    version: 10,
    name: "archive disk alerts and retention",
    sql: `
-- One row per archive root: the disk alert state machine (ok / warning / critical) and when the
-- last alert or reminder went out. Updated compare-and-set, so with several archiver replicas
-- exactly one of them raises each alert.
CREATE TABLE archive_disk_state (
  archive_path  text PRIMARY KEY,
  level         text NOT NULL DEFAULT 'ok' CHECK (level IN ('ok', 'warning', 'critical')),
  alerted_at    timestamptz,
  updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Retention: find a mailbox's messages older than N days whose files are still on disk.
CREATE INDEX messages_retention ON messages (tenant, mailbox, received_at) WHERE purged_at IS NULL;
`,
  },
  {
    version: 20,
    name: "acd callbacks and session lookups",
    sql: `
-- Inbound ACD callbacks (webhook adapter), keyed by the ACD's event id: a replayed callback
-- finds its row and changes nothing.
CREATE TABLE acd_callbacks (
  tenant       text NOT NULL,
  event_id     text NOT NULL,
  session_id   uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
  kind         text NOT NULL,
  received_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant, event_id)
);
-- An agent's own sessions (the agent API lists them on every refresh).
CREATE INDEX sessions_agent ON sessions (tenant, agent, state);
`,
  },
  {
    version: 11,
    name: "thread messages that arrive before the message they answer",
    sql: `
-- When a message is archived, earlier-archived messages that name it (In-Reply-To, References)
-- join its conversation: replies can arrive before what they answer (a backlog, the archived copy
-- of an agent's reply lagging behind the customer's answer). These make that lookup an index scan.
CREATE INDEX messages_in_reply_to ON messages (tenant, mailbox, in_reply_to);
CREATE INDEX messages_references ON messages USING gin ("references");
`,
  },
  {
    version: 12,
    name: "what the archiver concluded about a message",
    sql: `
-- One verdict per message instead of three loose booleans (is_auto_reply / is_bounce / is_loop
-- stay, filled from the verdict, for readers written before it): human, auto-reply, bounce,
-- bulk (mailing lists and mass mail) or loop, with the signal that decided it.
ALTER TABLE messages ADD COLUMN classification text NOT NULL DEFAULT 'human'
  CHECK (classification IN ('human', 'auto-reply', 'bounce', 'bulk', 'loop'));
ALTER TABLE messages ADD COLUMN classification_reason text;
-- The Date header as the sender wrote it (NULL when absent). date_header is NULL when it could not
-- be read even leniently; readers then order and show by received_at and say so.
ALTER TABLE messages ADD COLUMN date_raw text;
-- For a delivery status notification: the RFC Message-ID of the message it reports on, the status
-- code (e.g. 5.1.1) and the remote server's words. A sent reply "bounced" when an inbound message
-- of its tenant and mailbox has bounce_of = its rfc_message_id.
ALTER TABLE messages ADD COLUMN bounce_of text;
ALTER TABLE messages ADD COLUMN bounce_status text;
ALTER TABLE messages ADD COLUMN bounce_diagnostic text;
CREATE INDEX messages_bounce_of ON messages (tenant, mailbox, bounce_of) WHERE bounce_of IS NOT NULL;
`,
  },
  {
    version: 13,
    name: "loop breaker",
    sql: `
-- The loop breaker counts a sender's recent messages to a mailbox; this makes that an index scan.
CREATE INDEX messages_sender_time ON messages (tenant, mailbox, from_address, received_at) WHERE direction = 'inbound';
-- One row per (mailbox, sender) the loop breaker has stopped: when it last alerted and when it
-- last held a message back, so an ongoing loop raises one alert, not one per message, whichever
-- archiver replica archives it.
CREATE TABLE loop_breaker (
  tenant           text NOT NULL,
  mailbox          text NOT NULL,
  sender           text NOT NULL,
  alerted_at       timestamptz NOT NULL,
  last_tripped_at  timestamptz NOT NULL,
  tripped          bigint NOT NULL DEFAULT 1,
  PRIMARY KEY (tenant, mailbox, sender)
);
`,
  },
  {
    version: 21,
    name: "session trace context",
    sql: `
-- The W3C traceparent of the email a session was created for, so an agent's reply (sent much
-- later, from an HTTP request) continues the email's trace.
ALTER TABLE sessions ADD COLUMN traceparent text;
`,
  },
  {
    version: 22,
    name: "session announced",
    // When session.offered was published: for Softdial only once its IC was on a live socket, which
    // may be long after the row became "offered" (CallGem down). A restart reads it to tell a
    // first offer (announce it) from a re-offer (do not announce twice).
    sql: `
ALTER TABLE sessions ADD COLUMN announced_at timestamptz;
UPDATE sessions SET announced_at = offered_at WHERE offered_at IS NOT NULL;
`,
  },
  {
    version: 15,
    name: "agent replies and their outcome",
    // asd-bridge's record of each reply, reply-all and forward an agent asked for, and what became
    // of it (from mail.sent / mail.send-failed), so the desktop can show "sent", "failed: <the
    // server's words>" or "some recipients refused" instead of only "queued". Kept apart from
    // smtp-sender's sends row: that one is the sender's exactly-once bookkeeping, this one is what
    // the agent asked for (recipients as confirmed, the text, for an edit-and-retry).
    sql: `
CREATE TABLE agent_replies (
  command_id      text PRIMARY KEY,
  tenant          text NOT NULL,
  mailbox         text NOT NULL,
  session_id      uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
  agent           text NOT NULL,
  kind            text NOT NULL CHECK (kind IN ('reply', 'reply-all', 'forward')),
  to_addresses    text[] NOT NULL,
  cc_addresses    text[] NOT NULL DEFAULT '{}',
  body_text       text NOT NULL,
  -- queued: handed to smtp-sender; held: waiting for an administrator (it goes out after the fix);
  -- sent: the server took it; failed: it will not go out.
  state           text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'held', 'sent', 'failed')),
  rfc_message_id  text,
  server_response text,
  response_code   int,
  reason          text,
  -- Recipients refused while the server took the others: [{recipient, response}].
  refused         jsonb NOT NULL DEFAULT '[]',
  requested_at    timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_replies_session ON agent_replies (session_id, requested_at);
`,
  },
  {
    version: 31,
    name: "sends: refused recipients, failed sends per mailbox",
    // Partial refusals were only in last_error (which a failed Sent-folder copy overwrites); kept
    // here they travel in every mail.sent, also one republished after a crash. The index serves
    // "postroom status" (failed sends per mailbox).
    sql: `
ALTER TABLE sends ADD COLUMN refused jsonb NOT NULL DEFAULT '[]';
CREATE INDEX sends_failed ON sends (tenant, mailbox, updated_at) WHERE state = 'failed';
`,
  },
  {
    version: 24,
    name: "unanswered sessions",
    sql: `
-- An email the ACD let go without an agent (queue timeout without overflow, abandon, refusal) is
-- "unanswered" from that moment until an agent has it: unanswered_at is when it first was (kept
-- through requeues, so the age an alert reads is the customer's real wait), unanswered_reason
-- why. requeue_at: when the "requeue" policy offers it again (read back after a restart).
-- Final states are now completed, failed and closed (ended unanswered by the "close" policy).
ALTER TABLE sessions ADD COLUMN unanswered_at timestamptz;
ALTER TABLE sessions ADD COLUMN unanswered_reason text;
ALTER TABLE sessions ADD COLUMN requeue_at timestamptz;
CREATE INDEX sessions_unanswered ON sessions (tenant, unanswered_at) WHERE unanswered_at IS NOT NULL;
`,
  },
  {
    version: 40,
    name: "audit trail: who, from where, which session; append-only",
    // audit_events (migration 1) held only the archiver's own events. Agent and administrative
    // actions add who acted (actor_kind: agent, supervisor, operator, service; actor: the agent id
    // or the service), the session, the command and the client address, and the per-tenant query
    // (postroom audit, the supervisor API) needs an index by tenant and time. Append-only is
    // enforced by the database, not by convention: UPDATE, DELETE and TRUNCATE raise, whoever asks
    // (the owner can still drop the trigger, which is itself a visible schema change).
    sql: `
ALTER TABLE audit_events ADD COLUMN actor_kind text NOT NULL DEFAULT 'service'
  CHECK (actor_kind IN ('agent', 'supervisor', 'operator', 'service'));
ALTER TABLE audit_events ADD COLUMN session_id uuid;
ALTER TABLE audit_events ADD COLUMN command_id text;
ALTER TABLE audit_events ADD COLUMN client_address text;
CREATE INDEX audit_events_tenant_at ON audit_events (tenant, at);
CREATE INDEX audit_events_tenant_actor_at ON audit_events (tenant, actor, at);

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
`,
  },
  {
    version: 55,
    name: "sends: the composed bytes of small messages",
    // smtp-sender composes a message that fits in memory (≤ 256 KB) once and records its bytes
    // with the row in the same INSERT that claims the command, instead of a round trip through
    // the object store before every attempt; a retry or redelivery sends these same bytes.
    // Larger messages still stream through the object store (raw_object). NULL for those.
    sql: `
ALTER TABLE sends ADD COLUMN raw bytea;
`,
  },
  {
    version: 56,
    name: "messages read through Microsoft Graph",
    // A Graph message's identity is its immutable id (kept in uidl), unique per mailbox like a
    // POP3 UIDL: a redelivered mail.received event after a crash finds the row instead of a copy.
    sql: `
ALTER TABLE messages DROP CONSTRAINT messages_protocol_check;
ALTER TABLE messages ADD CONSTRAINT messages_protocol_check CHECK (protocol IN ('imap', 'pop3', 'smtp', 'graph'));
CREATE UNIQUE INDEX messages_graph_key ON messages (tenant, mailbox, uidl) WHERE protocol = 'graph';
`,
  },
];
