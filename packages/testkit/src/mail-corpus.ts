/**
 * A varied corpus of raw e-mails for archive tests and benchmarks: plain, HTML, alternative and
 * nested multiparts, inline images, hostile attachment names, many charsets, a DSN bounce, an
 * auto-reply, a message without Message-ID, broken MIME, and (optionally) a 25 MB attachment.
 *
 * Each message is built here, byte by byte, so tests can compare what was archived against
 * exactly what was sent. `expect` says what a correct parser reads from it — written by hand
 * from the bytes below, never computed by the code under test.
 */

export interface CorpusExpectation {
  /** The decoded subject. */
  subject?: string;
  /** A passage the decoded plain-text body contains. */
  text?: string;
  /** A passage the HTML body contains. */
  html?: string;
  /** Original file names of the attachment and inline parts, in order. */
  attachmentNames?: (string | null)[];
  /** Number of attachment and inline parts. */
  parts?: number;
  autoReply?: boolean;
  bounce?: boolean;
  loop?: boolean;
  /** The message has no Message-ID header. */
  noMessageId?: boolean;
}

export interface CorpusMessage {
  /** Short unique kebab-case name. */
  name: string;
  raw: Buffer;
  expect: CorpusExpectation;
}

const CRLF = "\r\n";

function headers(name: string, extra: string[] = [], options: { messageId?: boolean; subject?: string } = {}): string[] {
  return [
    `From: Ann Customer <ann@customer.example>`,
    `To: support@acme.test`,
    `Subject: ${options.subject ?? `corpus ${name}`}`,
    `Date: Tue, 03 Mar 2026 10:15:00 +0100`,
    ...(options.messageId === false ? [] : [`Message-ID: <${name}@corpus.example>`]),
    `MIME-Version: 1.0`,
    ...extra,
  ];
}

function join(...parts: (string | Buffer)[]): Buffer {
  return Buffer.concat(parts.map((p) => (typeof p === "string" ? Buffer.from(p, "latin1") : p)));
}

function text(lines: string[]): string {
  return lines.join(CRLF) + CRLF;
}

function utf8(s: string): Buffer {
  return Buffer.from(s, "utf8");
}

/** Base64 in 76-character lines, as MIME wants it. */
function b64(data: Buffer): string {
  return (data.toString("base64").match(/.{1,76}/g) ?? []).join(CRLF);
}

/** Encodes with a single-byte charset by inverting the platform's decoder (so no encoder library is needed). */
function singleByte(charset: string, s: string): Buffer {
  const decoder = new TextDecoder(charset);
  const map = new Map<string, number>();
  for (let b = 255; b >= 0; b--) map.set(decoder.decode(Uint8Array.of(b)), b);
  return Buffer.from([...s].map((ch) => {
    const b = map.get(ch);
    if (b === undefined) throw new Error(`${ch} is not in ${charset}`);
    return b;
  }));
}

// A 1x1 transparent PNG.
const PNG = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==", "base64");
const PDF = Buffer.from("%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", "latin1");

function withAttachments(name: string, files: { header: string; data: Buffer; type?: string }[], body = "See the attachments."): Buffer {
  const boundary = `b-${name}`;
  const out: (string | Buffer)[] = [text(headers(name, [`Content-Type: multipart/mixed; boundary="${boundary}"`])), CRLF];
  out.push(`--${boundary}${CRLF}Content-Type: text/plain; charset=utf-8${CRLF}${CRLF}${body}${CRLF}`);
  for (const f of files) {
    out.push(`--${boundary}${CRLF}Content-Type: ${f.type ?? "application/octet-stream"}${CRLF}${f.header}${CRLF}Content-Transfer-Encoding: base64${CRLF}${CRLF}`);
    out.push(b64(f.data) + CRLF);
  }
  out.push(`--${boundary}--${CRLF}`);
  return join(...out);
}

/** One text/plain message whose body (and subject, as an encoded word) are in `charset`. */
function charsetMessage(name: string, charset: string, encoded: Buffer, decoded: string, cte: "base64" | "quoted-printable" | "7bit" | "8bit"): CorpusMessage {
  const subject = `=?${charset}?B?${encoded.toString("base64")}?=`;
  let body: Buffer;
  if (cte === "base64") body = Buffer.from(b64(encoded) + CRLF, "latin1");
  else if (cte === "quoted-printable") body = Buffer.from([...encoded].map((b) => (b >= 33 && b <= 126 && b !== 61 ? String.fromCharCode(b) : b === 32 ? " " : `=${b.toString(16).toUpperCase().padStart(2, "0")}`)).join("") + CRLF, "latin1");
  else body = Buffer.concat([encoded, Buffer.from(CRLF)]);
  const raw = join(text(headers(name, [`Content-Type: text/plain; charset="${charset}"`, `Content-Transfer-Encoding: ${cte}`], { subject })), CRLF, body);
  return { name, raw, expect: { subject: decoded, text: decoded, parts: 0 } };
}

/**
 * Builds the corpus. `bigAttachmentBytes` (default 25 MB) sizes the one large attachment; 0
 * leaves that message out.
 */
export function buildMailCorpus(options: { bigAttachmentBytes?: number } = {}): CorpusMessage[] {
  const big = options.bigAttachmentBytes ?? 25 * 1024 * 1024;
  const list: CorpusMessage[] = [];

  list.push({
    name: "plain-ascii",
    raw: join(text(headers("plain-ascii", ["Content-Type: text/plain; charset=us-ascii"])), CRLF, text(["Hello,", "where is my order 4711?", "Ann"])),
    expect: { subject: "corpus plain-ascii", text: "where is my order 4711?", parts: 0 },
  });
  list.push({
    name: "plain-utf8-8bit",
    raw: join(text(headers("plain-utf8-8bit", ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"])), CRLF, utf8(text(["Grüße aus Köln — ça va? 你好 👋"]))),
    expect: { text: "Grüße aus Köln — ça va? 你好 👋", parts: 0 },
  });
  list.push({
    name: "html-only",
    raw: join(text(headers("html-only", ["Content-Type: text/html; charset=utf-8"])), CRLF, text(["<html><body><p>Order <b>4711</b> is late</p><script>alert(1)</script></body></html>"])),
    // Kept as received, script and all: sanitising is the viewer's job.
    expect: { html: "<script>alert(1)</script>", parts: 0 },
  });
  list.push({
    name: "alternative",
    raw: join(
      text(headers("alternative", ['Content-Type: multipart/alternative; boundary="alt"'])),
      CRLF,
      text(["--alt", "Content-Type: text/plain; charset=utf-8", "", "Plain version", "--alt", "Content-Type: text/html; charset=utf-8", "", "<p>HTML version</p>", "--alt--"]),
    ),
    expect: { text: "Plain version", html: "<p>HTML version</p>", parts: 0 },
  });
  list.push({
    name: "nested-related-mixed",
    raw: join(
      text(headers("nested-related-mixed", ['Content-Type: multipart/mixed; boundary="outer"'])),
      CRLF,
      text([
        "--outer",
        'Content-Type: multipart/alternative; boundary="alt2"',
        "",
        "--alt2",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "Logo below, invoice attached",
        "--alt2",
        'Content-Type: multipart/related; boundary="rel"',
        "",
        "--rel",
        "Content-Type: text/html; charset=utf-8",
        "",
        '<p>Logo: <img src="cid:logo@corpus"></p>',
        "--rel",
        "Content-Type: image/png",
        "Content-ID: <logo@corpus>",
        'Content-Disposition: inline; filename="logo.png"',
        "Content-Transfer-Encoding: base64",
        "",
        b64(PNG),
        "--rel--",
        "--alt2--",
        "--outer",
        'Content-Type: application/pdf; name="invoice.pdf"',
        'Content-Disposition: attachment; filename="invoice.pdf"',
        "Content-Transfer-Encoding: base64",
        "",
        b64(PDF),
        "--outer--",
      ]),
    ),
    expect: { text: "Logo below, invoice attached", html: "cid:logo@corpus", attachmentNames: ["logo.png", "invoice.pdf"], parts: 2 },
  });
  list.push({
    name: "inline-image",
    raw: join(
      text(headers("inline-image", ['Content-Type: multipart/related; boundary="r"'])),
      CRLF,
      text([
        "--r",
        "Content-Type: text/html; charset=utf-8",
        "",
        '<img src="cid:photo">',
        "--r",
        "Content-Type: image/png",
        "Content-ID: <photo>",
        "Content-Disposition: inline",
        "Content-Transfer-Encoding: base64",
        "",
        b64(PNG),
        "--r--",
      ]),
    ),
    expect: { attachmentNames: [null], parts: 1 },
  });
  list.push({
    name: "hostile-traversal",
    raw: withAttachments("hostile-traversal", [
      { header: 'Content-Disposition: attachment; filename="../../etc/passwd"', data: Buffer.from("root:x:0:0\n") },
      { header: "Content-Disposition: attachment; filename*=utf-8''..%5C..%5Cwindows%5Cwin.ini", data: Buffer.from("[fonts]\n") },
      { header: 'Content-Disposition: attachment; filename="/absolute/path.txt"', data: Buffer.from("x\n") },
    ]),
    expect: { attachmentNames: ["../../etc/passwd", "..\\..\\windows\\win.ini", "/absolute/path.txt"], parts: 3 },
  });
  list.push({
    name: "hostile-devices",
    raw: withAttachments("hostile-devices", [
      { header: 'Content-Disposition: attachment; filename="CON"', data: Buffer.from("con\n") },
      { header: 'Content-Disposition: attachment; filename="nul.txt"', data: Buffer.from("nul\n") },
      { header: 'Content-Disposition: attachment; filename="COM1"', data: Buffer.from("com\n") },
    ]),
    expect: { attachmentNames: ["CON", "nul.txt", "COM1"], parts: 3 },
  });
  list.push({
    name: "hostile-newline",
    raw: withAttachments("hostile-newline", [
      // RFC 2231 lets a name carry any byte, newlines and NUL included.
      { header: "Content-Disposition: attachment; filename*=utf-8''evil%0D%0Aname%00.txt", data: Buffer.from("newline\n") },
      { header: "Content-Disposition: attachment; filename*=utf-8''tab%09and%1Bescape.txt", data: Buffer.from("ctl\n") },
    ]),
    expect: { parts: 2 },
  });
  const long = `${"a".repeat(150)}${"é".repeat(150)}.pdf`;
  list.push({
    name: "hostile-long-name",
    raw: withAttachments("hostile-long-name", [{ header: `Content-Disposition: attachment; filename*=utf-8''${encodeURIComponent(long)}`, data: PDF, type: "application/pdf" }]),
    expect: { attachmentNames: [long], parts: 1 },
  });
  list.push({
    name: "duplicate-names",
    raw: withAttachments("duplicate-names", [
      { header: 'Content-Disposition: attachment; filename="report.pdf"', data: Buffer.from("%PDF first\n") },
      { header: 'Content-Disposition: attachment; filename="report.pdf"', data: Buffer.from("%PDF second\n") },
      { header: 'Content-Disposition: attachment; filename="REPORT.pdf"', data: Buffer.from("%PDF third\n") },
    ]),
    expect: { attachmentNames: ["report.pdf", "report.pdf", "REPORT.pdf"], parts: 3 },
  });
  list.push({
    name: "unicode-filename",
    raw: withAttachments("unicode-filename", [{ header: 'Content-Disposition: attachment; filename="=?utf-8?B?' + utf8("Überweisung März.pdf").toString("base64") + '?="', data: PDF }]),
    expect: { attachmentNames: ["Überweisung März.pdf"], parts: 1 },
  });
  list.push({
    name: "no-filename",
    raw: withAttachments("no-filename", [{ header: "Content-Disposition: attachment", data: Buffer.from([0, 1, 2, 3, 255]) }]),
    expect: { attachmentNames: [null], parts: 1 },
  });

  // Eight charsets besides UTF-8 and ASCII, single- and multi-byte, stateful (ISO-2022-JP) included.
  const cyr = "Здравствуйте, где мой заказ?";
  list.push(charsetMessage("charset-koi8-r", "koi8-r", singleByte("koi8-r", cyr), cyr, "8bit"));
  list.push(charsetMessage("charset-windows-1251", "windows-1251", singleByte("windows-1251", cyr), cyr, "quoted-printable"));
  // windows-1252 differs from ISO-8859-1 in 0x80-0x9F (€ is 0x80, the em dash 0x97); the
  // platform decoder treats the two alike, so those bytes are written out by hand.
  const latin = "Grüße, Ångström, façade, naïve";
  list.push(charsetMessage("charset-windows-1252", "windows-1252", Buffer.concat([Buffer.from(latin, "latin1"), Buffer.from([0x20, 0x97, 0x20, 0x31, 0x32, 0x20, 0x80])]), `${latin} — 12 €`, "quoted-printable"));
  const central = "Dzień dobry, zażółć gęślą jaźń";
  list.push(charsetMessage("charset-iso-8859-2", "iso-8859-2", singleByte("iso-8859-2", central), central, "quoted-printable"));
  list.push(charsetMessage("charset-iso-2022-jp", "iso-2022-jp", Buffer.from("1b244224332473244b2441244f2122436d4a38244b2444242424461b2842", "hex"), "こんにちは、注文について", "7bit"));
  list.push(charsetMessage("charset-shift_jis", "shift_jis", Buffer.from("82b2928d95b682a082e882aa82c682a4", "hex"), "ご注文ありがとう", "base64"));
  list.push(charsetMessage("charset-euc-kr", "euc-kr", Buffer.from("bec8b3e7c7cfbcbcbfe420c1d6b9ae", "hex"), "안녕하세요 주문", "base64"));
  list.push(charsetMessage("charset-gbk", "gbk", Buffer.from("c4fabac3a3acced2b5c4b6a9b5a5", "hex"), "您好，我的订单", "base64"));
  list.push(charsetMessage("charset-big5", "big5", Buffer.from("b17aa66ea141ad71b3e6b0ddc344", "hex"), "您好，訂單問題", "base64"));

  list.push({
    name: "no-message-id",
    raw: join(text(headers("no-message-id", ["Content-Type: text/plain"], { messageId: false })), CRLF, text(["I have no Message-ID."])),
    expect: { noMessageId: true, text: "I have no Message-ID." },
  });
  list.push({
    name: "dsn-bounce",
    raw: join(
      text([
        "From: Mail Delivery System <MAILER-DAEMON@mx.customer.example>",
        "To: support@acme.test",
        "Subject: Undelivered Mail Returned to Sender",
        "Date: Tue, 03 Mar 2026 10:16:00 +0100",
        "Message-ID: <dsn-bounce@corpus.example>",
        "MIME-Version: 1.0",
        "Auto-Submitted: auto-replied",
        'Content-Type: multipart/report; report-type=delivery-status; boundary="dsn"',
      ]),
      CRLF,
      text([
        "--dsn",
        "Content-Type: text/plain",
        "",
        "This is the mail system. Your message could not be delivered.",
        "--dsn",
        "Content-Type: message/delivery-status",
        "",
        "Reporting-MTA: dns; mx.customer.example",
        "",
        "Final-Recipient: rfc822; nobody@customer.example",
        "Action: failed",
        "Status: 5.1.1",
        "--dsn",
        "Content-Type: text/rfc822-headers",
        "",
        "Message-ID: <reply-1@acme.test>",
        "Subject: Re: Where is my order?",
        "--dsn--",
      ]),
    ),
    expect: { bounce: true, autoReply: false, text: "could not be delivered" },
  });
  list.push({
    name: "auto-reply",
    raw: join(text(headers("auto-reply", ["Content-Type: text/plain", "Auto-Submitted: auto-replied", "X-Auto-Response-Suppress: All"], { subject: "Out of office: Re: your ticket" })), CRLF, text(["I am away until Monday."])),
    expect: { autoReply: true, bounce: false, subject: "Out of office: Re: your ticket" },
  });
  list.push({
    name: "loop-bulk",
    raw: join(text(headers("loop-bulk", ["Content-Type: text/plain", "Precedence: bulk", "X-Loop: support@acme.test"])), CRLF, text(["Newsletter"])),
    expect: { loop: true },
  });
  list.push({
    name: "truncated-mime",
    // The closing boundary never comes and the base64 stops mid-line: a cut-off download.
    raw: join(
      text(headers("truncated-mime", ['Content-Type: multipart/mixed; boundary="cut"'])),
      CRLF,
      text(["--cut", "Content-Type: text/plain", "", "Start of a message that is cut", "--cut", 'Content-Type: application/pdf; name="half.pdf"', "Content-Transfer-Encoding: base64", ""]),
      b64(PDF).slice(0, 30),
    ),
    expect: { text: "Start of a message that is cut" },
  });
  list.push({
    name: "malformed-headers",
    raw: join(
      "From: <<broken@@address\r\n",
      "To: support@acme.test\r\n",
      "this line has no colon\r\n",
      "Subject: =?utf-8?B?not base64!!?=\r\n",
      "Date: not a date\r\n",
      "Content-Type: multipart/mixed\r\n",
      "\r\n",
      "A multipart without a boundary.\r\n",
    ),
    expect: { noMessageId: true },
  });
  list.push({
    name: "nul-bytes",
    raw: join(text(headers("nul-bytes", ["Content-Type: text/plain; charset=utf-8"])), CRLF, Buffer.from("before\u0000after\r\n", "latin1")),
    expect: { text: "before" },
  });
  list.push({
    name: "bare-lf",
    raw: Buffer.from(["From: ann@customer.example", "To: support@acme.test", "Subject: corpus bare-lf", "Message-ID: <bare-lf@corpus.example>", "", "Unix line endings only", ""].join("\n"), "latin1"),
    expect: { subject: "corpus bare-lf", text: "Unix line endings only" },
  });
  list.push({
    name: "forwarded-rfc822",
    raw: join(
      text(headers("forwarded-rfc822", ['Content-Type: multipart/mixed; boundary="fw"'])),
      CRLF,
      text([
        "--fw",
        "Content-Type: text/plain",
        "",
        "Forwarding the original.",
        "--fw",
        "Content-Type: message/rfc822",
        'Content-Disposition: attachment; filename="original.eml"',
        "",
        "From: someone@else.example",
        "Subject: the original",
        "",
        "Original body",
        "--fw--",
      ]),
    ),
    expect: { text: "Forwarding the original.", attachmentNames: ["original.eml"], parts: 1 },
  });
  list.push({
    name: "calendar-invite",
    raw: join(
      text(headers("calendar-invite", ['Content-Type: multipart/mixed; boundary="cal"'])),
      CRLF,
      text(["--cal", "Content-Type: text/plain", "", "Invitation", "--cal", 'Content-Type: text/calendar; method=REQUEST; name="invite.ics"', "Content-Disposition: attachment; filename=invite.ics", "", "BEGIN:VCALENDAR", "END:VCALENDAR", "--cal--"]),
    ),
    expect: { attachmentNames: ["invite.ics"], parts: 1 },
  });
  list.push({
    name: "folded-long-header",
    raw: join(text(headers("folded-long-header", ["Content-Type: text/plain", `X-Long: ${Array.from({ length: 60 }, (_, i) => `token${i}`).join("\r\n ")}`], { subject: "A subject folded\r\n over two lines" })), CRLF, text(["Body"])),
    expect: { subject: "A subject folded over two lines" },
  });
  list.push({
    name: "empty-body",
    raw: join(text(headers("empty-body", ["Content-Type: text/plain"])), CRLF),
    expect: { parts: 0 },
  });
  if (big > 0) {
    const data = Buffer.alloc(big);
    // Not all zeros: a pattern that compresses poorly keeps the test honest about I/O.
    for (let i = 0; i + 4 <= big; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i);
    list.push({
      name: "large-attachment",
      raw: withAttachments("large-attachment", [{ header: 'Content-Disposition: attachment; filename="big.bin"', data }]),
      expect: { attachmentNames: ["big.bin"], parts: 1 },
    });
  }
  return list;
}
