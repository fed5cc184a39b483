package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/mailstack/mailstack/store"
)

// queue runs `mailstack queue list|retry ID|delete ID`: the outbound
// queue, i.e. mail to other servers not yet delivered.
func (c *cli) queue(ctx context.Context, args []string) error {
	sub, rest, err := c.subcommand(args, "queue", "list", "retry", "delete")
	if err != nil {
		return err
	}
	if sub == "list" {
		a := c.newAdmin("queue list", "")
		if err := a.parse(rest, 0, 0); err != nil {
			return err
		}
		return a.with(ctx, func(st *store.Store) error {
			list, err := st.QueueEntries(ctx)
			if err != nil {
				return err
			}
			if len(list) == 0 {
				fmt.Fprintln(c.stdout, "The outbound queue is empty.")
				return nil
			}
			tw := a.table()
			fmt.Fprintln(tw, "ID\tFROM\tTO\tSIZE\tQUEUED\tATTEMPTS\tNEXT ATTEMPT\tLAST ERROR")
			for _, q := range list {
				next := q.NextAttempt.Local().Format(time.DateTime)
				switch {
				case q.FailedAt != nil:
					// Reported with the other failures of its delivery pass.
					next = "failed " + q.DSNStatus + ", bounce pending"
				case q.Lease != "" && q.NextAttempt.After(time.Now()):
					next = "delivering now"
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%d\t%s\t%s\n", q.ID, q.MailFrom, q.RcptTo, q.Size,
					q.CreatedAt.Local().Format(time.DateTime), q.Attempts, next, q.LastError)
			}
			return tw.Flush()
		})
	}
	a := c.newAdmin("queue "+sub, "ID")
	if err := a.parse(rest, 1, 1); err != nil {
		return err
	}
	id, err := strconv.ParseInt(a.args[0], 10, 64)
	if err != nil {
		return fmt.Errorf("queue ID %q is not a number; see 'mailstack queue list'", a.args[0])
	}
	return a.with(ctx, func(st *store.Store) error {
		// Name the entry for the error message.
		named := func(err error) error {
			if errors.Is(err, store.ErrNotFound) {
				return &store.ObjectError{Kind: "queue entry", Name: a.args[0], Err: store.ErrNotFound}
			}
			return err
		}
		if sub == "retry" {
			if err := st.RetryQueued(ctx, id); err != nil {
				return named(err)
			}
			fmt.Fprintf(c.stdout, "Queue entry %d is due now; a running server delivers it at once.\n", id)
			return nil
		}
		if err := st.DeleteQueued(ctx, id); err != nil {
			return named(err)
		}
		fmt.Fprintf(c.stdout, "Queue entry %d deleted; no bounce was sent.\n", id)
		return nil
	})
}
