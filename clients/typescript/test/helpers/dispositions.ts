import { Code } from "@connectrpc/connect";

import { OK, type Disposition, type StatusCode } from "../../src/policy.js";

/** The disposition table of clients/README.md, row by row. */
export const DISPOSITIONS: Array<[StatusCode, Disposition]> = [
  [OK, "reconnect"],
  [Code.Unavailable, "reconnect"],
  [Code.ResourceExhausted, "reconnect"],
  [Code.DeadlineExceeded, "reconnect"],
  [Code.Internal, "reconnect"],
  [Code.Unknown, "reconnect"],
  [Code.Canceled, "reconnect"],
  [Code.Unauthenticated, "renewToken"],
  [Code.Aborted, "fail"],
  [Code.InvalidArgument, "fail"],
  [Code.PermissionDenied, "fail"],
  [Code.FailedPrecondition, "fail"],
  [Code.NotFound, "fail"],
  [Code.AlreadyExists, "fail"],
  [Code.OutOfRange, "fail"],
  [Code.Unimplemented, "fail"],
  [Code.DataLoss, "fail"],
];

