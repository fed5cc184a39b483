package store

import (
	"context"
	"encoding/json"
	"time"
)

// RecordThrottleDelays returns pol with its delays passed to record
// instead of slept, so that tests see which attempts wait without timing
// them.
func RecordThrottleDelays(pol ThrottlePolicy, record func(time.Duration)) ThrottlePolicy {
	pol.wait = record
	return pol
}

// EncodeMailboxChange is the payload the writers' SQL (mailboxNotifySQL
// and its inline parts) makes of c, computed by the database behind s.
func EncodeMailboxChange(ctx context.Context, s *Store, c MailboxChange) (string, error) {
	type update struct {
		UID  uint32   `json:"uid"`
		Bits int      `json:"bits"`
		Kw   []string `json:"kw"`
	}
	inline := ""
	ups := []update{}
	var gone []int64
	if c.Changes != nil {
		for _, m := range c.Changes.Updated {
			bits, kw, err := parseFlags(m.Flags)
			if err != nil {
				return "", err
			}
			ups = append(ups, update{m.UID, bits, kw})
		}
		for _, uid := range c.Changes.Expunged {
			gone = append(gone, int64(uid))
		}
		// The writers aggregate over their rows, as here (in no order:
		// the decoder sorts).
		inline = inlineSQL("$3::bigint", "coalesce((SELECT string_agg("+inlineUpdateSQL("u.uid", "u.bits", "u.kw")+
			", '') FROM jsonb_to_recordset($4::jsonb) u(uid bigint, bits int, kw text[])), '') || "+
			"coalesce((SELECT string_agg("+inlineExpungeSQL("x")+", '') FROM unnest($5::bigint[]) x), '')")
	}
	args := []any{c.MailboxID, int64(c.ModSeq)}
	if inline != "" {
		js, err := json.Marshal(ups)
		if err != nil {
			return "", err
		}
		args = append(args, int64(c.UIDValidity), js, gone)
	}
	var payload string
	err := s.pool.QueryRow(ctx, `SELECT `+mailboxPayloadSQL("$1::bigint", "$2::bigint", inline), args...).Scan(&payload)
	return payload, err
}

// DecodeMailboxChange decodes a payload of MailboxChannel as the LISTEN
// connection does.
func DecodeMailboxChange(payload string) (MailboxChange, error) { return decodeMailboxChange(payload) }

// EncodeLoginChange is the payload the writers' SQL (loginNotifySQL)
// makes of c, computed by the database behind s.
func EncodeLoginChange(ctx context.Context, s *Store, c LoginChange) (string, error) {
	var payload string
	err := s.pool.QueryRow(ctx, `SELECT `+loginPayloadSQL("$1::bigint", "$2::bigint"), c.AccountID, c.AppPasswordID).Scan(&payload)
	return payload, err
}

// DecodeLoginChange decodes a payload of LoginChannel as the LISTEN
// connection does.
func DecodeLoginChange(payload string) (*LoginChange, error) { return decodeLoginChange(payload) }
