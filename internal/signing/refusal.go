package signing

import "github.com/google/uuid"

// RefusalResultID is the result_id of the signature refusal (exit 123) of
// request requestID on pc: UUIDv5 in the OID namespace of
// "<request_id>|<pc_id>|signature-refused", upstream's derivation. A refusal
// does not consume the request id, so the same command can be refused again
// (the replay consumer re-delivers it on every reconnect, and a broadcast
// arrives on two subjects); a deterministic id makes every repeat the same
// result, which the RESULTS stream drops as a duplicate and a projector
// collapses on.
func RefusalResultID(requestID, pc string) string {
	return uuid.NewSHA1(uuid.NameSpaceOID, []byte(requestID+"|"+pc+"|signature-refused")).String()
}
