import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { createServer, connect, type Server } from "node:tls";
import type { AddressInfo } from "node:net";
import { after, before, test } from "node:test";
import { selfSignedCertificate, tempDir } from "@postroom/testkit";
import { certificateErrorCode, certificateExplanation, peerIssuer } from "./test-auth-tls.js";

const dir = tempDir("test-auth-tls");
let server: Server;
let port: number;

before(async () => {
  const cert = await selfSignedCertificate(dir.path, "Contoso Inspection CA");
  server = createServer({ cert: cert.certPem, key: await readFile(cert.keyPath) }, (s) => s.end());
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  port = (server.address() as AddressInfo).port;
});
after(async () => {
  await new Promise<void>((r) => server.close(() => r()));
  await dir.remove();
});

function handshake(): Promise<Error> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port, rejectUnauthorized: true });
    s.once("secureConnect", () => reject(new Error("an untrusted certificate was accepted")));
    s.once("error", resolve);
  });
}

test("an untrusted certificate is explained as a CA to trust, naming the CA and NODE_EXTRA_CA_CERTS, not as a wrong port", async () => {
  const error = await handshake();
  const code = certificateErrorCode(new Error("IMAP connection failed", { cause: error }));
  assert.equal(code, "DEPTH_ZERO_SELF_SIGNED_CERT");
  const issuer = await peerIssuer("127.0.0.1", "127.0.0.1", port);
  assert.equal(issuer?.root, "Contoso Inspection CA");
  const explanation = certificateExplanation(code!, "127.0.0.1", port, issuer);
  assert.match(explanation!.fix, /"Contoso Inspection CA"'s certificate: NODE_EXTRA_CA_CERTS=/);
  assert.match(explanation!.fix, /the port and TLS mode are right/);
});

test("a missing intermediate points at the server's chain; a refused connection is no certificate problem", () => {
  assert.match(certificateExplanation("UNABLE_TO_VERIFY_LEAF_SIGNATURE", "mail.example", 993)!.fix, /server's certificate chain/);
  assert.equal(certificateErrorCode(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" })), undefined);
  assert.equal(certificateExplanation("ECONNREFUSED", "mail.example", 993), undefined);
});
