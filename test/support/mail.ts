import { randomBytes } from "node:crypto";

/** A small but real customer email, CRLF line endings as on the wire. */
export function customerEmail(options: { from?: string; to: string; subject?: string; body?: string; messageId?: string; extraHeaders?: string[] }): Buffer {
  const id = options.messageId ?? `<${randomBytes(8).toString("hex")}@customer.example>`;
  const lines = [
    `From: Ann Customer <${options.from ?? "ann@customer.example"}>`,
    `To: ${options.to}`,
    `Subject: ${options.subject ?? "Where is my order?"}`,
    `Date: ${new Date().toUTCString().replace("GMT", "+0000")}`,
    `Message-ID: ${id}`,
    "MIME-Version: 1.0",
    ...(options.extraHeaders ?? []),
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: 8bit",
    "",
    options.body ?? "Hello,\r\nmy order 4711 has not arrived. Grüße, Ann",
    "",
  ];
  return Buffer.from(lines.join("\r\n"), "utf8");
}
