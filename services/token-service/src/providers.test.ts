import assert from "node:assert/strict";
import { generateKeyPairSync, verify } from "node:crypto";
import { after, test } from "node:test";
import { rsaCertificate, tempDir } from "@postroom/testkit";
import { GoogleTokenSource, certificateThumbprint, microsoftAuthorityHost, microsoftScope, msalConfiguration } from "./providers.js";

const dir = tempDir("providers");
after(() => dir.remove());
const base = { tenantId: "3f2c9a4e-6b1d-4c8e-9a7f-0d5e2b1c4a88", clientId: "5a7d3c21-9e4b-4f6a-8c2d-1b0e9f8a7c66", clientSecret: "v" };

test("each cloud has its token host and Exchange scope", () => {
  assert.deepEqual([microsoftAuthorityHost({ cloud: "global" }), microsoftScope({ cloud: "global" })], ["https://login.microsoftonline.com", "https://outlook.office365.com/.default"]);
  assert.deepEqual([microsoftAuthorityHost({ cloud: "usgov" }), microsoftScope({ cloud: "usgov" })], ["https://login.microsoftonline.us", "https://outlook.office365.us/.default"]);
  assert.deepEqual([microsoftAuthorityHost({ cloud: "china" }), microsoftScope({ cloud: "china" })], ["https://login.partner.microsoftonline.cn", "https://partner.outlook.cn/.default"]);
});

test("the authority is tenant-specific; a real cloud gets no inline metadata, an override host does", () => {
  const real = msalConfiguration({ ...base, cloud: "usgov" });
  assert.equal(real.auth.authority, `https://login.microsoftonline.us/${base.tenantId}`);
  assert.equal(real.auth.knownAuthorities, undefined);
  const local = msalConfiguration({ ...base, cloud: "global", authorityHost: "https://127.0.0.1:8443/" });
  assert.equal(local.auth.authority, `https://127.0.0.1:8443/${base.tenantId}`);
  assert.deepEqual(local.auth.knownAuthorities, ["127.0.0.1:8443"]);
  assert.equal(JSON.parse(local.auth.authorityMetadata!).token_endpoint, `https://127.0.0.1:8443/${base.tenantId}/oauth2/v2.0/token`);
  assert.ok(JSON.parse(local.auth.cloudDiscoveryMetadata!).metadata[0].aliases.includes("127.0.0.1:8443"));
});

test("a certificate credential uses the SHA-256 thumbprint read from the PEM", async () => {
  const cert = await rsaCertificate(dir.path, "thumb");
  const config = msalConfiguration({ tenantId: base.tenantId, clientId: base.clientId, cloud: "global", certificate: { certificatePem: cert.certificatePem, privateKeyPem: cert.privateKeyPem } });
  assert.match(config.auth.clientCertificate?.thumbprintSha256 ?? "", /^[0-9a-f]{64}$/);
  assert.equal(config.auth.clientCertificate?.thumbprintSha256, certificateThumbprint(cert.certificatePem));
  assert.equal(config.auth.clientSecret, undefined);
  assert.throws(() => certificateThumbprint("not a certificate"), /not a valid PEM certificate/);
});

test("the Google assertion is RS256 with sub = the mailbox, the Gmail scope, aud = the token URL and one hour", () => {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048, privateKeyEncoding: { type: "pkcs8", format: "pem" }, publicKeyEncoding: { type: "spki", format: "pem" } });
  const source = new GoogleTokenSource({ client_email: "sa@p.iam.gserviceaccount.com", private_key: privateKey }, "support@acme.test", "https://oauth2.example/token");
  const [h, p, sig] = source.assertion(1_800_000_000).split(".");
  const header = JSON.parse(Buffer.from(h!, "base64url").toString()) as Record<string, unknown>;
  const claims = JSON.parse(Buffer.from(p!, "base64url").toString()) as Record<string, unknown>;
  assert.equal(header.alg, "RS256");
  assert.deepEqual([claims.iss, claims.sub, claims.scope, claims.aud, claims.exp], ["sa@p.iam.gserviceaccount.com", "support@acme.test", "https://mail.google.com/", "https://oauth2.example/token", 1_800_003_600]);
  assert.ok(verify("sha256", Buffer.from(`${h}.${p}`), publicKey, Buffer.from(sig!, "base64url")), "the signature verifies with the public key");
});

