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
    version: 21,
    name: "session trace context",
    sql: `
-- The W3C traceparent of the email a session was created for, so an agent's reply (sent much
-- later, from an HTTP request) continues the email's trace.
ALTER TABLE sessions ADD COLUMN traceparent text;
`,
  },
];
