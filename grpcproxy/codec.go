package grpcproxy

import "fmt"

// frame is one gRPC message, undecoded.
type frame struct{ data []byte }

// rawCodec passes messages through as bytes. It calls itself "proto" so the
// content type on both sides stays what the agent's clients use.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	f, ok := v.(*frame)
	if !ok {
		return nil, fmt.Errorf("grpcproxy: cannot marshal %T", v)
	}
	return f.data, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	f, ok := v.(*frame)
	if !ok {
		return fmt.Errorf("grpcproxy: cannot unmarshal into %T", v)
	}
	// A fresh copy: gRPC reuses data after return, and may still be sending
	// the previous message's bytes when the next one is read.
	f.data = append([]byte(nil), data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }
