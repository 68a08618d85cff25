/**
 * A corpus of mail as the world sends it — people (some with odd headers), auto-responders,
 * bounces, mailing lists, loops, broken dates and hostile attachment names — for the test that
 * sends it from Dovecot through the whole system (test/e2e/mail-classification.test.ts).
 *
 * Every message is built here byte by byte, and `expect` says, written by hand beside it, what
 * Postroom must conclude: the verdict and a passage of its reason, whether it is offered (with
 * the tenant's default classification actions: human offered, bulk offered with a flag, the rest
 * archived only), the stored addresses, the date and the attachment names. Nothing here calls
 * the code under test.
 *
 * The mailbox is `support@acme.test` (tenant `acme`, mailbox `support`) with the alias
 * `help@acme.test`. Each message has its own sender unless the case is about the sender, so the
 * loop breaker never decides anything here.
 */

export type CorpusVerdict = "human" | "auto-reply" | "bounce" | "bulk" | "loop";

export interface ClassifiedExpectation {
  classification: CorpusVerdict;
  /** A passage of the reason; null: no reason at all. */
  reason: string | null;
  /** Offered to agents (a session exists). */
  offered: boolean;
  /** Offered with its classification shown as a session warning. */
  flagged: boolean;
  from: string;
  to: string[];
  cc: string[];
  /** The Date header as sent (unfolded), null when there is none. */
  dateRaw: string | null;
  /** What it means (ISO, UTC), null when absent or unreadable. */
  date: string | null;
  /** Original and stored name of each attachment, in order. */
  attachments: { original: string | null; stored: string }[];
  /** For a bounce: the Message-ID of what bounced and the status. */
  bounceOf?: string;
  bounceStatus?: string;
  /** The remote server's words as stored (null: none given). */
  bounceDiagnostic?: string | null;
}

export interface ClassifiedMessage {
  name: string;
  raw: Buffer;
  expect: ClassifiedExpectation;
}

export const CORPUS_MAILBOX = { address: "support@acme.test", aliases: ["help@acme.test"], loopToken: "acme/support" };

const CRLF = "\r\n";

/** [Date header as sent, ISO meaning or null]. */
const DATES: [string, string | null][] = [
  ["Tue, 03 Mar 2026 10:15:00 +0100", "2026-03-03T09:15:00.000Z"],
  ["Wed, 4 Mar 2026 08:00:00 -0500 (EST)", "2026-03-04T13:00:00.000Z"],
  ["Thu, 05 Mar 26 12:30:00 GMT", "2026-03-05T12:30:00.000Z"],
  ["Fri, 06 Mar 2026 09:00:00 PST", "2026-03-06T17:00:00.000Z"],
  ["6 Mar 2026 23:59:59 +1400", "2026-03-06T09:59:59.000Z"],
  ["Sat, 07 Mar 2026 10:00:00 +01:00", "2026-03-07T09:00:00.000Z"],
  ["Sun Mar 08 2026 10:00:00 GMT+0200 (Eastern European Standard Time)", "2026-03-08T08:00:00.000Z"],
  ["2026-03-09T10:00:00Z", "2026-03-09T10:00:00.000Z"],
  ["2026-03-09 11:00:00", "2026-03-09T11:00:00.000Z"],
  ["10.03.2026 10:00 +0100", "2026-03-10T09:00:00.000Z"],
  ["Tue Mar 10 10:00:00 2026", "2026-03-10T10:00:00.000Z"],
  ["Wednesday, 11 March 2026 10:00:00 +0000", "2026-03-11T10:00:00.000Z"],
  ["yesterday at noon, more or less", null],
  ["Tue, 31 Feb 2026 10:00:00 +0000", null],
  ["soon", null],
];

interface HeaderCase {
  label: string;
  /** Header lines after the standard From/To/Subject/Date/Message-ID. */
  headers: string[];
  /** Replaces the message's own From line (`From: …`). */
  from?: string;
  /** The address the archive must store as From (lower case). */
  fromAddress?: string;
  subject?: string;
  /** Replaces the message's Message-ID. */
  messageId?: string;
  verdict: CorpusVerdict;
  reason: string | null;
}

const OUR_ID = "<0123456789abcdef0123456789abcdef.postroom@acme.test>";

const HEADER_CASES: HeaderCase[] = [
  { label: "plain", headers: [], verdict: "human", reason: null },
  { label: "auto-submitted-no-comment", headers: ["Auto-Submitted: no (sent by a human)"], verdict: "human", reason: "Auto-Submitted: no" },
  { label: "auto-submitted-no-caps", headers: ["Auto-Submitted: NO"], verdict: "human", reason: "Auto-Submitted: NO" },
  { label: "auto-submitted-no-vs-suppress", headers: ["Auto-Submitted: no", "X-Auto-Response-Suppress: All"], verdict: "human", reason: "Auto-Submitted: no" },
  { label: "outlook-dr-rn", headers: ["X-Auto-Response-Suppress: DR, RN, NRN", "Thread-Index: AQHZ"], verdict: "human", reason: null },
  { label: "answer-to-our-reply", headers: [`In-Reply-To: ${OUR_ID}`, `References: ${OUR_ID}`], subject: "Re: your order", verdict: "human", reason: null },
  { label: "display-name-spells-us", headers: [], from: 'From: "support@acme.test" <eve@customer.example>', fromAddress: "eve@customer.example", verdict: "human", reason: null },
  { label: "comment-spells-us", headers: [], from: "From: frank@customer.example (support@acme.test)", fromAddress: "frank@customer.example", verdict: "human", reason: null },
  { label: "lookalike-domain", headers: [], from: "From: support@acme.test.customer.example", fromAddress: "support@acme.test.customer.example", verdict: "human", reason: null },
  { label: "vacation-question", headers: [], subject: "Out of office hours support?", verdict: "human", reason: "looks automatic, but no header says so" },
  { label: "meeting-request", headers: ["Content-Class: urn:content-classes:calendarmessage"], verdict: "human", reason: null },
  { label: "other-postroom-mailbox", headers: ["X-Postroom-Loop: acme/sales"], messageId: "<11111111111111111111111111111111.postroom@acme.test>", verdict: "human", reason: null },

  { label: "exchange-oof", headers: ["Auto-Submitted: auto-generated", "X-Auto-Response-Suppress: All", "Return-Path: <>"], subject: "Automatic reply: your order", verdict: "auto-reply", reason: "Auto-Submitted: auto-generated" },
  { label: "exchange-2010-oof", headers: ["X-Auto-Response-Suppress: All"], subject: "Out of Office: your order", verdict: "auto-reply", reason: "X-Auto-Response-Suppress: All" },
  { label: "gmail-vacation", headers: ["Auto-Submitted: auto-replied", "Precedence: bulk", "X-Autoreply: yes"], subject: "Vacation", verdict: "auto-reply", reason: "Auto-Submitted: auto-replied" },
  { label: "sieve-vacation", headers: ["Auto-Submitted: auto-replied (vacation)", "Precedence: bulk"], verdict: "auto-reply", reason: "Auto-Submitted: auto-replied" },
  { label: "auto-submitted-params", headers: ['Auto-Submitted: auto-replied; owner-email="x@customer.example"'], verdict: "auto-reply", reason: "Auto-Submitted: auto-replied" },
  { label: "auto-notified", headers: ["Auto-Submitted: auto-notified"], verdict: "auto-reply", reason: "Auto-Submitted: auto-notified" },
  { label: "x-autoreply", headers: ["X-Autoreply: yes"], verdict: "auto-reply", reason: "X-Autoreply: yes" },
  { label: "x-autorespond", headers: ["X-Autorespond: Thanks"], verdict: "auto-reply", reason: "X-Autorespond: Thanks" },
  { label: "precedence-auto-reply", headers: ["Precedence: auto_reply"], verdict: "auto-reply", reason: "Precedence: auto_reply" },
  { label: "unix-vacation", headers: ["Precedence: bulk"], subject: "away from the office", verdict: "auto-reply", reason: "with Precedence: bulk" },
  { label: "null-sender", headers: ["Return-Path: <>"], subject: "Thanks for your mail", verdict: "auto-reply", reason: "Return-Path: <>" },
  { label: "foreign-x-loop", headers: ["X-Loop: bot@responder.example"], verdict: "auto-reply", reason: "stamped by another automatic system" },
  { label: "french-answering-us", headers: [`In-Reply-To: ${OUR_ID}`], subject: "Réponse automatique : votre commande", verdict: "auto-reply", reason: "in answer to a Postroom reply" },
  { label: "read-receipt", headers: ['Content-Type: multipart/report; report-type=disposition-notification; boundary="mdn"'], verdict: "auto-reply", reason: "read receipt" },

  { label: "mailman", headers: ["List-Id: Users <users.lists.widget.example>", "List-Post: <mailto:users@lists.widget.example>", "Precedence: list"], verdict: "bulk", reason: "Precedence: list" },
  { label: "google-group", headers: ["List-Id: <team.googlegroups.example>"], verdict: "bulk", reason: "List-Id: <team.googlegroups.example>" },
  { label: "newsletter-one-click", headers: ["List-Unsubscribe: <https://shop.example/u/1>", "List-Unsubscribe-Post: List-Unsubscribe=One-Click"], verdict: "bulk", reason: "List-Unsubscribe: <https://shop.example/u/1>" },
  { label: "precedence-bulk", headers: ["Precedence: bulk"], verdict: "bulk", reason: "Precedence: bulk" },
  { label: "precedence-junk", headers: ["Precedence: junk"], verdict: "bulk", reason: "Precedence: junk" },
  { label: "list-human-says-no", headers: ["Auto-Submitted: no", "List-Id: <ops.example.org>"], verdict: "bulk", reason: "List-Id: <ops.example.org>" },
  { label: "list-with-x-loop", headers: ["List-Post: <mailto:list@lists.example>", "X-Loop: list@lists.example"], verdict: "bulk", reason: "List-Post" },

  { label: "own-from", headers: [], from: "From: support@acme.test", fromAddress: "support@acme.test", verdict: "loop", reason: "From is the mailbox's own address support@acme.test" },
  { label: "own-from-plus", headers: [], from: "From: ACME <support+ticket-7@acme.test>", fromAddress: "support+ticket-7@acme.test", verdict: "loop", reason: "own address support+ticket-7@acme.test" },
  { label: "alias-from", headers: [], from: "From: Help Desk <HELP@acme.test>", fromAddress: "help@acme.test", verdict: "loop", reason: "own address help@acme.test" },
  { label: "own-sender", headers: ["Sender: support@acme.test"], verdict: "loop", reason: "Sender is the mailbox's own address" },
  { label: "own-return-path", headers: ["Return-Path: <Support@ACME.test>"], verdict: "loop", reason: "Return-Path is the mailbox's own address support@acme.test" },
  { label: "own-reply-to", headers: ["Reply-To: Support <support@acme.test>"], verdict: "loop", reason: "Reply-To is the mailbox's own address" },
  { label: "x-loop-us", headers: ["X-Loop: support@acme.test"], verdict: "loop", reason: "X-Loop: support@acme.test" },
  { label: "x-loop-bulk", headers: ["Precedence: bulk", "X-Loop: support@acme.test"], verdict: "loop", reason: "X-Loop: support@acme.test" },
  { label: "our-stamp", headers: ["X-Postroom-Loop: acme/support"], verdict: "loop", reason: "X-Postroom-Loop: acme/support" },
  { label: "our-message-id", headers: [], messageId: "<fedcba9876543210fedcba9876543210.postroom@acme.test>", verdict: "loop", reason: "is one Postroom generated" },
  { label: "exchange-rule-loop", headers: ["X-MS-Exchange-Inbox-Rules-Loop: support@acme.test"], verdict: "loop", reason: "X-MS-Exchange-Inbox-Rules-Loop: support@acme.test" },
];

function headerBlock(n: number, c: { from?: string; subject: string; date: string | null; messageId: string; to?: string; cc?: string; extra: string[] }): string[] {
  return [
    c.from ?? `From: Customer ${n} <c${n}@customer.example>`,
    `To: ${c.to ?? "support@acme.test"}`,
    ...(c.cc ? [`Cc: ${c.cc}`] : []),
    `Subject: ${c.subject}`,
    ...(c.date === null ? [] : [`Date: ${c.date}`]),
    `Message-ID: ${c.messageId}`,
    "MIME-Version: 1.0",
    ...c.extra,
  ];
}

function plainBody(headers: string[], text: string): Buffer {
  const hasType = headers.some((h) => /^content-type:/i.test(h));
  if (hasType) {
    // A report (MDN): a human-readable part and the notification.
    return Buffer.from(
      [...headers, "", "--mdn", "Content-Type: text/plain", "", text, "--mdn", "Content-Type: message/disposition-notification", "", "Final-Recipient: rfc822; c@customer.example", "Disposition: manual-action/MDN-sent-manually; displayed", "--mdn--", ""].join(CRLF),
      "utf8",
    );
  }
  return Buffer.from([...headers, "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit", "", text, ""].join(CRLF), "utf8");
}

/** RFC 2231 `filename*=utf-8''…` so any Unicode name survives the trip byte for byte. */
function rfc2231(name: string): string {
  return `filename*=utf-8''${[...Buffer.from(name, "utf8")].map((b) => (/[A-Za-z0-9._-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, "0")}`)).join("")}`;
}

/** [original name (undefined: none), content type, stored name as Postroom must write it]. */
const ATTACHMENTS: [string | undefined, string, string][] = [
  ["COM¹.txt", "text/plain", "_COM1.txt"],
  ["CONIN$", "application/octet-stream", "_CONIN$"],
  ["nul.pdf", "application/pdf", "_nul.pdf"],
  ["report\u202efdp.bat", "application/octet-stream", "reportfdp.bat"],
  ["\u2066invoice\u2069.pdf", "application/pdf", "invoice.pdf"],
  ["\u200b", "application/pdf", "attachment-1.pdf"],
  ["\u200b\u200d\ufeff", "image/png", "attachment-1.png"],
  ["line\u2028break.txt", "text/plain", "linebreak.txt"],
  ["-rf.txt", "text/plain", "rf.txt"],
  ["\ufeff.pdf", "application/pdf", "attachment-1.pdf"],
  ["invoice\ufeff.pdf", "application/pdf", "invoice.pdf"],
  ["ＣＯＮ.txt", "text/plain", "_CON.txt"],
  ["../../etc/passwd", "text/plain", "_.._etc_passwd"],
  ["soft\u00adhyphen.doc", "application/msword", "softhyphen.doc"],
  ["plain name.pdf", "application/pdf", "plain name.pdf"],
  ["Grüße.txt", "text/plain", "Grüße.txt"],
  [undefined, "application/pdf", "attachment-1.pdf"],
  [undefined, "image/jpeg", "attachment-1.jpg"],
];

export function buildClassifiedCorpus(): ClassifiedMessage[] {
  const out: ClassifiedMessage[] = [];
  let n = 0;
  const date = () => DATES[n % DATES.length]!;

  // Every header case twice, each time with another Date form.
  for (const round of [1, 2]) {
    for (const c of HEADER_CASES) {
      n++;
      const [dateRaw, iso] = date();
      const messageId = c.messageId ? c.messageId.replace(/^<([0-9a-f]{31})[0-9a-f]/, (_, h: string) => `<${h}${round}`) : `<cc-${n}@corpus.example>`;
      const headers = headerBlock(n, { ...(c.from ? { from: c.from } : {}), subject: `${c.subject ?? `corpus ${c.label}`}`, date: dateRaw, messageId, extra: c.headers });
      const offered = c.verdict === "human" || c.verdict === "bulk";
      out.push({
        name: `${c.label}-${round}`,
        raw: plainBody(headers, `Message ${n}: ${c.label}.`),
        expect: {
          classification: c.verdict,
          reason: c.reason,
          offered,
          flagged: c.verdict === "bulk",
          from: c.fromAddress ?? `c${n}@customer.example`,
          to: ["support@acme.test"],
          cc: [],
          dateRaw,
          date: iso,
          // A read receipt's notification part is kept under a name of Postroom's.
          attachments: c.label === "read-receipt" ? [{ original: null, stored: "attachment-1.txt" }] : [],
        },
      });
    }
  }

  // Date forms, each twice more, and a message without any Date header.
  for (const [dateRaw, iso] of [...DATES, ...DATES]) {
    n++;
    out.push({
      name: `date-${n}`,
      raw: plainBody(headerBlock(n, { subject: `date ${n}`, date: dateRaw, messageId: `<cc-${n}@corpus.example>`, extra: [] }), "When was this sent?"),
      expect: { classification: "human", reason: null, offered: true, flagged: false, from: `c${n}@customer.example`, to: ["support@acme.test"], cc: [], dateRaw, date: iso, attachments: [] },
    });
  }
  n++;
  out.push({
    name: "no-date",
    raw: plainBody(headerBlock(n, { subject: "no date", date: null, messageId: `<cc-${n}@corpus.example>`, extra: [] }), "No Date header at all."),
    expect: { classification: "human", reason: null, offered: true, flagged: false, from: `c${n}@customer.example`, to: ["support@acme.test"], cc: [], dateRaw: null, date: null, attachments: [] },
  });

  // Addresses as people write them.
  const addressCases: [string, string | undefined, string[], string[]][] = [
    ["support@acme.test, Bob Other <BOB@Other.Example>", undefined, ["support@acme.test", "bob@other.example"], []],
    ['"Support, ACME" <support@acme.test>', "Carl <carl@customer.example>, dora@customer.example", ["support@acme.test"], ["carl@customer.example", "dora@customer.example"]],
    ["Team: support@acme.test, eve@customer.example;", undefined, ["support@acme.test", "eve@customer.example"], []],
    ["SUPPORT@ACME.TEST", "Grüße Team <gruesse@customer.example>", ["support@acme.test"], ["gruesse@customer.example"]],
    ["support@acme.test (ACME support)", undefined, ["support@acme.test"], []],
    ["=?utf-8?Q?S=C3=BCpport?= <support@acme.test>", "=?utf-8?B?SsO8cmdlbg==?= <juergen@customer.example>", ["support@acme.test"], ["juergen@customer.example"]],
  ];
  for (const [to, cc, toList, ccList] of addressCases) {
    n++;
    const [dateRaw, iso] = date();
    out.push({
      name: `addresses-${n}`,
      raw: plainBody(headerBlock(n, { subject: `addresses ${n}`, date: dateRaw, messageId: `<cc-${n}@corpus.example>`, to, ...(cc ? { cc } : {}), extra: [] }), "To several people."),
      expect: { classification: "human", reason: null, offered: true, flagged: false, from: `c${n}@customer.example`, to: toList, cc: ccList, dateRaw, date: iso, attachments: [] },
    });
  }

  // Hostile attachment names, one per message.
  for (const [original, type, stored] of ATTACHMENTS) {
    n++;
    const [dateRaw, iso] = date();
    const boundary = `att-${n}`;
    const disposition = original === undefined ? "Content-Disposition: attachment" : `Content-Disposition: attachment; ${rfc2231(original)}`;
    const raw = Buffer.from(
      [
        ...headerBlock(n, { subject: `attachment ${n}`, date: dateRaw, messageId: `<cc-${n}@corpus.example>`, extra: [`Content-Type: multipart/mixed; boundary="${boundary}"`] }),
        "",
        `--${boundary}`,
        "Content-Type: text/plain; charset=utf-8",
        "",
        "See the attachment.",
        `--${boundary}`,
        `Content-Type: ${type}`,
        disposition,
        "Content-Transfer-Encoding: base64",
        "",
        Buffer.from(`attachment ${n}\n`).toString("base64"),
        `--${boundary}--`,
        "",
      ].join(CRLF),
      "utf8",
    );
    out.push({
      name: `attachment-${n}`,
      raw,
      expect: { classification: "human", reason: null, offered: true, flagged: false, from: `c${n}@customer.example`, to: ["support@acme.test"], cc: [], dateRaw, date: iso, attachments: [{ original: original ?? null, stored }] },
    });
  }

  // An embedded message, without a name and with one.
  for (const named of [false, true]) {
    n++;
    const [dateRaw, iso] = date();
    const boundary = `fwd-${n}`;
    const raw = Buffer.from(
      [
        ...headerBlock(n, { subject: `forwarded ${n}`, date: dateRaw, messageId: `<cc-${n}@corpus.example>`, extra: [`Content-Type: multipart/mixed; boundary="${boundary}"`] }),
        "",
        `--${boundary}`,
        "Content-Type: text/plain; charset=utf-8",
        "",
        "Forwarding what I got.",
        `--${boundary}`,
        "Content-Type: message/rfc822",
        named ? 'Content-Disposition: attachment; filename="Fwd: my order"' : "Content-Disposition: attachment",
        "",
        "From: shop@shop.example",
        "Subject: your order",
        "Message-ID: <inner@shop.example>",
        "",
        "Your order has shipped.",
        `--${boundary}--`,
        "",
      ].join(CRLF),
      "utf8",
    );
    out.push({
      name: `embedded-${named ? "named" : "unnamed"}`,
      raw,
      expect: {
        classification: "human", reason: null, offered: true, flagged: false, from: `c${n}@customer.example`, to: ["support@acme.test"], cc: [], dateRaw, date: iso,
        attachments: [named ? { original: "Fwd: my order", stored: "Fwd_ my order.eml" } : { original: null, stored: "attachment-1.eml" }],
      },
    });
  }

  // Bounces of replies we sent: standard reports (the original or only its headers returned) and
  // the non-standard kind with the copy quoted in the body.
  const bounces: { label: string; from: string; subject: string; status: string; diagnostic: string; returned: "message" | "headers" | "quoted" }[] = [
    { label: "postfix", from: "MAILER-DAEMON@mx.customer.example (Mail Delivery System)", subject: "Undelivered Mail Returned to Sender", status: "5.1.1", diagnostic: "smtp; 550 5.1.1 <nobody@customer.example>: Recipient address rejected", returned: "message" },
    { label: "postfix-headers", from: "MAILER-DAEMON@mx.customer.example", subject: "Undelivered Mail Returned to Sender", status: "5.2.2", diagnostic: "smtp; 552 5.2.2 Mailbox full", returned: "headers" },
    { label: "exchange", from: "Microsoft Outlook <postmaster@customer.onmicrosoft.example>", subject: "Undeliverable: Re: your order", status: "5.1.10", diagnostic: "smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound", returned: "headers" },
    { label: "gmail", from: "Mail Delivery Subsystem <mailer-daemon@googlemail.example>", subject: "Delivery Status Notification (Failure)", status: "5.1.1", diagnostic: "smtp; 550-5.1.1 The email account that you tried to reach does not exist", returned: "message" },
    { label: "delayed", from: "MAILER-DAEMON@relay.example", subject: "Delayed Mail (still being retried)", status: "4.4.1", diagnostic: "smtp; 421 4.4.1 connection timed out", returned: "headers" },
    { label: "qmail", from: "MAILER-DAEMON@mail.example", subject: "failure notice", status: "5.1.1", diagnostic: "", returned: "quoted" },
  ];
  for (const b of bounces) {
    n++;
    const [dateRaw, iso] = date();
    const bounced = `<${(n * 7919).toString(16).padStart(32, "0")}.postroom@acme.test>`;
    const boundary = `dsn-${n}`;
    const original = ["From: ACME Support <support@acme.test>", "To: nobody@customer.example", "Subject: Re: your order", `Message-ID: ${bounced}`, "X-Postroom-Loop: acme/support"];
    const lines =
      b.returned === "quoted"
        ? [
            ...headerBlock(n, { from: `From: ${b.from}`, subject: b.subject, date: dateRaw, messageId: `<cc-${n}@corpus.example>`, extra: ["Content-Type: text/plain"] }),
            "",
            "Hi. This is the qmail-send program at mail.example.",
            "<nobody@customer.example>:",
            "Sorry, no mailbox here by that name. (#5.1.1)",
            "--- Below this line is a copy of the message.",
            "",
            ...original,
            "",
            "Thanks for your mail.",
            "",
          ]
        : [
            ...headerBlock(n, { from: `From: ${b.from}`, subject: b.subject, date: dateRaw, messageId: `<cc-${n}@corpus.example>`, extra: ["Auto-Submitted: auto-replied", `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`] }),
            "",
            `--${boundary}`,
            "Content-Type: text/plain",
            "",
            "Your message could not be delivered.",
            `--${boundary}`,
            "Content-Type: message/delivery-status",
            "",
            "Reporting-MTA: dns; mx.customer.example",
            "",
            "Final-Recipient: rfc822; nobody@customer.example",
            `Action: ${b.status.startsWith("4") ? "delayed" : "failed"}`,
            `Status: ${b.status}`,
            `Diagnostic-Code: ${b.diagnostic}`,
            "",
            `--${boundary}`,
            `Content-Type: ${b.returned === "message" ? "message/rfc822" : "text/rfc822-headers"}`,
            "",
            ...original,
            ...(b.returned === "message" ? ["", "Thanks for your mail."] : []),
            `--${boundary}--`,
            "",
          ];
    const fromAddress = /<([^>]+)>/.exec(b.from)?.[1] ?? b.from.split(" ")[0]!;
    out.push({
      name: `bounce-${b.label}`,
      raw: Buffer.from(lines.join(CRLF), "utf8"),
      expect: {
        classification: "bounce",
        reason: b.returned === "quoted" ? 'with subject "failure notice"' : "delivery-status",
        offered: false,
        flagged: false,
        from: fromAddress.toLowerCase(),
        to: ["support@acme.test"],
        cc: [],
        dateRaw,
        date: iso,
        // The returned original (or its headers) is kept as a part under a name of Postroom's; the
        // delivery-status part is read into the text body by the parser.
        attachments: b.returned === "quoted" ? [] : [{ original: null, stored: b.returned === "message" ? "attachment-1.eml" : "attachment-1.txt" }],
        bounceOf: bounced,
        bounceStatus: b.status,
        bounceDiagnostic: b.diagnostic === "" ? null : b.diagnostic.replace(/^smtp;\s*/, ""),
      },
    });
  }
  return out;
}
