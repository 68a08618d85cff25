export type { TestServer } from "./test-server.js";
export { stopAll } from "./test-server.js";
export { startDovecot, DovecotServer, dovecotConfig } from "./dovecot.js";
export type { DovecotOptions, DovecotInfo, DovecotUser, AppendOptions, DovecotConfigParams } from "./dovecot.js";
export { startSmtpSink, SmtpSink } from "./smtp-sink.js";
export type {
  SmtpSinkOptions,
  SmtpSinkInfo,
  SmtpUser,
  SmtpMessage,
  SmtpEnvelope,
  SmtpAttempt,
  SmtpStage,
  SmtpReply,
  SmtpReplyContext,
  SmtpReplyHook,
} from "./smtp-sink.js";
export { createTestDatabase, adminDatabaseUrl } from "./database.js";
export type { TestDatabase } from "./database.js";
export { testNamespace, cleanupNamespace, belongsToNamespace, natsUrl } from "./nats-namespace.js";
export { waitFor, WaitForTimeoutError } from "./wait-for.js";
export type { WaitForOptions } from "./wait-for.js";
export { freePort, freePorts } from "./ports.js";
export { tempDir, keepTemp } from "./temp-dir.js";
export type { TempDir } from "./temp-dir.js";
export { selfSignedCertificate } from "./certificate.js";
export type { SelfSignedCertificate } from "./certificate.js";
export { spawnDaemon, findBinary, readGreeting, MissingBinaryError } from "./daemon.js";
export type { Daemon, SpawnDaemonOptions } from "./daemon.js";
export { onProcessExit } from "./cleanup.js";
export { LineSocket } from "./line-socket.js";
export type { LineSocketOptions } from "./line-socket.js";
export { SoftdialSimulator } from "./softdial-simulator.js";
export type { SoftdialSimulatorOptions, SimRoute, SimQueue, SimFrame, SimSession } from "./softdial-simulator.js";
export {
  startFakeIdentityPlatform,
  FakeIdentityPlatform,
  rsaCertificate,
  openIdConfiguration,
  instanceDiscovery,
  EXCHANGE_AUDIENCE,
  ROLE_FOR_SERVICE,
} from "./fake-identity.js";
export type {
  FakeApp,
  FakeServiceAccount,
  FakeIdentityOptions,
  FakeIdentityInfo,
  FakeTokenRequest,
  FakeIntrospection,
  TokenValidation,
  RsaCertificate,
} from "./fake-identity.js";
export { dovecotOAuth2 } from "./dovecot-oauth2.js";
export type { DovecotOAuth2Options, DovecotOAuth2Profile } from "./dovecot-oauth2.js";
export { buildMailCorpus } from "./mail-corpus.js";
export type { CorpusMessage, CorpusExpectation } from "./mail-corpus.js";
export { startPostfix, PostfixServer, dovecotAuthListener, postfixMainCf, postfixMasterCf } from "./postfix.js";
export type { PostfixOptions, PostfixInfo } from "./postfix.js";
