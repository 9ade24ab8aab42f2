package inventory

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/go-ole/go-ole"
	"github.com/go-ole/go-ole/oleutil"
)

// sFalse is CoInitializeEx's "already initialised on this thread".
const sFalse = 0x00000001

// wmiQuery runs one WQL query in root\cimv2 and returns each object's named
// properties as raw VARIANT values (see wmiparse.go).
//
// It talks to WMI through go-ole directly instead of loading structs with
// github.com/yusufpapurcu/wmi (the pattern it follows): that loader fails the
// whole query when one uint64 property arrives as an empty or odd string, and
// aborts a row when a provider sends a number where the struct has a string.
// Decoding the raw values ourselves keeps one bad property from emptying a
// whole source. The call blocks (COM has no cancellation); the caller bounds
// it with a deadline and abandons it if it hangs.
func wmiQuery(query string, props []string) (rows []wmiRow, err error) {
	// COM is per thread: pin the goroutine for the whole conversation.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	if err := ole.CoInitializeEx(0, ole.COINIT_MULTITHREADED); err != nil {
		var oleErr *ole.OleError
		if !errors.As(err, &oleErr) || (oleErr.Code() != ole.S_OK && oleErr.Code() != sFalse) {
			return nil, fmt.Errorf("initialise COM: %w", err)
		}
	}
	// S_OK and S_FALSE both need a matching CoUninitialize.
	defer ole.CoUninitialize()

	unknown, err := oleutil.CreateObject("WbemScripting.SWbemLocator")
	if err != nil {
		return nil, fmt.Errorf("create SWbemLocator: %w", err)
	}
	if unknown == nil {
		return nil, errors.New("create SWbemLocator: got nil")
	}
	defer unknown.Release()

	locator, err := unknown.QueryInterface(ole.IID_IDispatch)
	if err != nil {
		return nil, fmt.Errorf("SWbemLocator dispatch: %w", err)
	}
	defer locator.Release()

	serviceRaw, err := oleutil.CallMethod(locator, "ConnectServer")
	if err != nil {
		return nil, fmt.Errorf("connect to WMI: %w", err)
	}
	defer serviceRaw.Clear()
	service := serviceRaw.ToIDispatch()

	resultRaw, err := oleutil.CallMethod(service, "ExecQuery", query)
	if err != nil {
		return nil, fmt.Errorf("WMI query %q: %w", query, err)
	}
	defer resultRaw.Clear()
	result := resultRaw.ToIDispatch()

	enumRaw, err := result.GetProperty("_NewEnum")
	if err != nil {
		return nil, fmt.Errorf("WMI query %q: enumerate: %w", query, err)
	}
	defer enumRaw.Clear()
	enum, err := enumRaw.ToIUnknown().IEnumVARIANT(ole.IID_IEnumVariant)
	if err != nil {
		return nil, fmt.Errorf("WMI query %q: enumerate: %w", query, err)
	}
	if enum == nil {
		return nil, fmt.Errorf("WMI query %q: enumerate: got nil", query)
	}
	defer enum.Release()

	for {
		item, n, err := enum.Next(1)
		if n == 0 {
			// The end of the set comes back as S_FALSE, which go-ole
			// reports as an error: only a row count of zero matters.
			return rows, nil
		}
		if err != nil {
			item.Clear()
			return rows, fmt.Errorf("WMI query %q: next row: %w", query, err)
		}
		rows = append(rows, wmiReadRow(&item, props))
	}
}

// wmiReadRow reads props from one SWbemObject and releases it. A property
// that cannot be read is left out (decoded as missing).
func wmiReadRow(item *ole.VARIANT, props []string) wmiRow {
	defer item.Clear()
	obj := item.ToIDispatch()
	row := make(wmiRow, len(props))
	if obj == nil {
		return row
	}
	var set *ole.VARIANT // Properties_, fetched on first need
	defer func() {
		if set != nil {
			set.Clear()
		}
	}()
	for _, p := range props {
		v, err := oleutil.GetProperty(obj, p)
		if err != nil {
			// Some WMI implementations (Wine's among them) do not expose
			// the properties as dispatch members, only through the
			// Properties_ collection: ask that instead.
			if set == nil {
				if set, err = oleutil.GetProperty(obj, "Properties_"); err != nil {
					set = nil
					continue
				}
			}
			if v, err = wmiPropertyValue(set.ToIDispatch(), p); err != nil {
				continue
			}
		}
		switch val := v.Value().(type) {
		case *ole.IDispatch, *ole.IUnknown:
			// Embedded objects are not inventory fields.
		default:
			row[p] = val
		}
		v.Clear()
	}
	return row
}

// wmiPropertyValue is Properties_.Item(name).Value.
func wmiPropertyValue(set *ole.IDispatch, name string) (*ole.VARIANT, error) {
	if set == nil {
		return nil, errors.New("no Properties_ collection")
	}
	itemRaw, err := oleutil.CallMethod(set, "Item", name)
	if err != nil {
		return nil, err
	}
	defer itemRaw.Clear()
	prop := itemRaw.ToIDispatch()
	if prop == nil {
		return nil, errors.New("Properties_.Item returned nil")
	}
	return oleutil.GetProperty(prop, "Value")
}
